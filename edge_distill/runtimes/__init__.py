"""One module per inference runtime (llama.cpp, ONNX Runtime GenAI, ExecuTorch, transformers, vLLM): how a
model is opened, with which threads and context, and how token ids go in and come out. The teacher, the
SIKeD/FDD samplers, export-time parity and the device bench all open their runtime here. Torch-free at import:
each module imports its runtime library inside the functions that need it."""
