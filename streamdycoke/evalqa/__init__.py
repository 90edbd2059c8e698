"""Evidence of accuracy: a streaming event-QA benchmark with ground truth, real pretrained features
(EfficientNet-Lite0), real answerers, and every token selection method compared at matched budgets.

- :mod:`.scenes`: camera-like streams composed from real photographs, with ground truth;
- :mod:`.questions`: the questions an operator asks, answered by the generator;
- :mod:`.data`: every frame encoded and cached;
- :mod:`.answerer`: the event-QA model over tokens at their (frame, position) slots, and its training;
- :mod:`.methods`: uniform, DyCoke TTM, EVS, the streaming compressor and PolicyNet as keep masks;
- :mod:`.run`: ``streamdycoke eval``.
"""
