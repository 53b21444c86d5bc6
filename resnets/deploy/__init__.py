"""Use a trained network: export it (ONNX, TorchScript, torch.export) with parity checks, and
classify image files with a checkpoint or an exported model."""
