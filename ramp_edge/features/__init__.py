"""Layer features and Scale Folding.

- `records`: calibration statistics as records, npz on disk (numpy).
- `stats`: collect them by running the model in torch/transformers (imports torch).
- `imatrix`: llama.cpp imatrix GGUF files from statistics (numpy, gguf).
- `embed`: the 11-dimensional embedding per quantizable tensor (numpy, libggml).
- `folding`: Scale Folding on GGUF tensors for export (numpy, libggml).
- `naming`: GGUF <-> transformers names and layouts (numpy, gguf).

Only `stats` needs torch; import it inside functions that need it.
"""
