"""PyInfer: a readable, fast LLM inference engine and OpenAI-compatible server."""

__version__ = "0.1.0"

from pyinfer.sampling_params import SamplingParams


def __getattr__(name: str):
    if name == "LLM":  # imported lazily: the server process must not import the engine's torch code
        from pyinfer.engine.llm import LLM

        return LLM
    raise AttributeError(name)


__all__ = ["LLM", "SamplingParams", "__version__"]
