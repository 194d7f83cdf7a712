"""chatmodel-operator: serve chat LLMs on Triton with TensorRT-LLM, from one ChatModel resource."""

__version__ = "0.1.0"
