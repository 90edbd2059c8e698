"""One frozen configuration tree for a stream, and command-line options generated from it.

:class:`PipelineConfig` nests the settings each part of a stream owns (the encoder's
:class:`~streamdycoke.encoders.EncoderSpec`, the compressor's :class:`~streamdycoke.stream.StreamConfig`,
the sampler's :class:`~streamdycoke.sampler.SamplerConfig` and the policy's
:class:`~streamdycoke.policy.PolicySpec`); each default lives in its own dataclass, once. The
pipeline's pydantic models nest these same dataclasses, and :func:`add_options` /
:func:`from_options` derive command-line options from them, so a flag's default is the field's.

The options are added to argparse parsers (each package registers its own subcommands on one parser);
a field's help is its dataclass's ``Attributes:`` entry (parsed by docstring-parser) or its pydantic
``Field`` description. tyro and jsonargparse were not used: each builds and owns the whole parser tree.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .encoders import EncoderSpec
from .encoders.differential import DifferentialConfig
from .policy import PolicySpec
from .sampler import SamplerConfig
from .stream import StreamConfig

__all__ = ["PipelineConfig", "add_options", "field_defaults", "from_options"]


@dataclass(frozen=True)
class PipelineConfig:
    """Everything one stream's per-frame path is built from (see :func:`streamdycoke.build_pipeline`).

    Attributes:
        encoder: frames -> tokens.
        stream: the streaming compressor (window, scene cuts, stored dtype).
        sampler: adaptive frame rate; None processes every frame. Under rate control
            (``stream.budget_ratio``) it processes at least the budget's share of frames
            (:meth:`~streamdycoke.sampler.SamplerConfig.for_budget`, applied here).
        policy: each frame's token budget.
        differential: differential encoding (:mod:`streamdycoke.encoders.differential`: a processed frame
            recomputes only the patches that changed); None: every processed frame encoded whole.
    """

    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    stream: StreamConfig = field(default_factory=StreamConfig)
    sampler: SamplerConfig | None = field(default_factory=SamplerConfig)
    policy: PolicySpec = field(default_factory=PolicySpec)
    differential: DifferentialConfig | None = None

    def __post_init__(self) -> None:
        if self.differential is not None and self.encoder.name != "llava-onevision":
            raise ValueError(f"differential encoding is for llava-onevision's tower, not {self.encoder.name!r}")
        if self.stream.budget_ratio is not None and self.policy.max_keep_ratio < 1.0:
            raise ValueError("policy.max_keep_ratio caps a policy's count, which rate control (stream.budget_ratio) "
                             "does not use: set one or the other")
        if self.sampler is not None:
            object.__setattr__(self, "sampler", self.sampler.for_budget(self.stream.budget_ratio))


# -- command-line options from config classes ----------------------------------------------------------
def _fields(cls: type) -> dict[str, tuple[Any, Any, str]]:
    """``name -> (annotation, default, help)`` of a frozen dataclass or a pydantic model class."""
    out: dict[str, tuple[Any, Any, str]] = {}
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        docs = _attribute_docs(cls.__doc__ or "")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            out[f.name] = (hints[f.name], default, docs.get(f.name, ""))
    elif hasattr(cls, "model_fields"):  # pydantic (the core does not import it)
        for name, f in cls.model_fields.items():
            out[name] = (f.annotation, f.get_default(call_default_factory=True), f.description or "")
    else:
        raise TypeError(f"{cls.__name__} is neither a dataclass nor a pydantic model")
    return out


def _attribute_docs(doc: str) -> dict[str, str]:
    """``name -> text`` of the Google-style ``Attributes:`` section of a docstring (docstring-parser)."""
    import docstring_parser

    parsed = docstring_parser.parse(doc, style=docstring_parser.DocstringStyle.GOOGLE)
    # argparse %-formats help strings: a literal % is written %%
    return {p.arg_name: " ".join((p.description or "").split()).replace("%", "%%")
            for p in parsed.params if p.args[0] == "attribute"}


def _scalar(annotation: Any) -> tuple[type, bool]:
    """(the scalar type, whether None is allowed) of ``int``, ``float | None``, ``Optional[str]``..."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return inner[0], True
    return annotation, False


def _flag(name: str, rename: dict[str, str]) -> str:
    return "--" + rename.get(name, name).replace("_", "-")


def add_options(parser: argparse.ArgumentParser | Any, cls: type, *, prefix: str = "",
                rename: dict[str, str] | None = None, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--option`` per scalar field of ``cls`` (a dataclass or pydantic model), with the
    field's default, type and help. The option is named after the field (``rename`` maps a field to
    another option name) and stored under ``prefix + field``; nested configs, dicts and lists are
    skipped (they belong in a config file)."""
    rename = rename or {}
    group = parser.add_argument_group(cls.__name__)
    for name, (ann, default, doc) in _fields(cls).items():
        if name in skip:
            continue
        typ, optional = _scalar(ann)
        dest = prefix + name
        if typ is bool:
            group.add_argument(_flag(name, rename), dest=dest, default=default,
                               action=argparse.BooleanOptionalAction, help=doc)
        elif typing.get_origin(typ) is typing.Literal:
            choices = list(typing.get_args(typ)) + ([None] if optional else [])
            group.add_argument(_flag(name, rename), dest=dest, default=default, choices=choices,
                               type=lambda v: None if v.lower() == "none" else v,
                               help=f"{doc} (default: {default})".strip())
        elif typ in (int, float, str):
            conv = typ if not optional else (lambda v, t=typ: None if v.lower() == "none" else t(v))
            group.add_argument(_flag(name, rename), dest=dest, default=default, type=conv,
                               metavar=typ.__name__.upper(), help=f"{doc} (default: {default})".strip())


def from_options(cls: type, args: argparse.Namespace, *, prefix: str = "", **overrides: Any) -> Any:
    """Build ``cls`` from the options :func:`add_options` added (plus ``overrides``)."""
    values = {name: getattr(args, prefix + name) for name in _fields(cls) if hasattr(args, prefix + name)}
    values.update(overrides)
    return cls(**values) if dataclasses.is_dataclass(cls) else cls.model_validate(values)


def field_defaults(cls: type) -> dict[str, Any]:
    """``name -> default`` of every field of ``cls`` (for tests and documentation)."""
    return {name: default for name, (_, default, _) in _fields(cls).items()}
