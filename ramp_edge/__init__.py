"""ramp-edge: mixed-precision GGUF quantization (RAMP) and an edge deployment toolchain."""

__version__ = "0.1.0"
