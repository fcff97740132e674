"""DeepSeek (`kind = "deepseek"`): an OpenAI Chat Completions upstream with its own quirks.

`spec` (no HTTP import: the configuration builds it), `catalog` (the known models and their
limits), `dsml` (tool calls printed as DSML markup, recovered), `provider` (the adapter).
"""
