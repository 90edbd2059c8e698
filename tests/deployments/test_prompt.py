"""The prompt around the video (unit: a small word-level tokenizer built here stands in for a model's)."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from deployments.prompt import VideoPrompt

TURNS = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tokenizer(template: str | None) -> PreTrainedTokenizerFast:
    words = ["[UNK]", "is", "anyone", "there", "?", "what", "moves"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.chat_template = template
    return fast


def test_the_models_chat_template_renders_the_turns_split_where_the_video_goes():
    p = VideoPrompt(_tokenizer(TURNS), vocab=7)
    before, after = p.texts("is anyone there?")
    assert before == "<|im_start|>user\n"
    assert after == "\nis anyone there?<|im_end|>\n<|im_start|>assistant\n"
    # what precedes the video is the same for every question: one kept cache serves them all
    assert p.texts("what moves?")[0] == before
    pre, suf = p.around_video("is anyone there?")  # the ids are the tokenizer's, no special tokens added
    assert suf.tolist()[:3] == [1, 2, 3] and len(pre) == len(p.ids(before)) and p.ids("what moves ?").tolist() == [5, 6, 4]


def test_a_template_with_a_system_turn_keeps_it_before_the_video():
    system = "{{ '<|im_start|>system\\nYou watch cameras.<|im_end|>\\n' }}" + TURNS
    before, after = VideoPrompt(_tokenizer(system), vocab=7).texts("what moves?")
    assert before == "<|im_start|>system\nYou watch cameras.<|im_end|>\n<|im_start|>user\n"
    assert after.startswith("\nwhat moves?<|im_end|>")


def test_without_a_template_llava_onevisions_turns_and_without_a_tokenizer_hashed_words():
    assert VideoPrompt(_tokenizer(None), vocab=7).texts("what moves?") == (
        "<|im_start|>user\n", "\nwhat moves?<|im_end|>\n<|im_start|>assistant\n")
    tiny = VideoPrompt(None, vocab=1000)
    pre, suf = tiny.around_video("what moves?")
    assert tiny.around_video("what moves?")[1].tolist() == suf.tolist()  # stable
    assert all(10 <= i < 990 for i in [*pre.tolist(), *suf.tolist()]) and tiny.text([5, 6]) == "<5> <6>"


def test_a_template_that_drops_the_users_message_is_refused():
    with pytest.raises(ValueError, match="dropped the user's message"):
        VideoPrompt(_tokenizer("{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"), vocab=7).texts("?")
