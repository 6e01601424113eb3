"""The reasoner: prompt, the model-input builder, backends (transformers, vLLM, OpenAI-compatible), answer parsing,
checkpoint identity and the published-model store."""
