"""What you trained, used elsewhere: ONNX export (onnx.py) and PyTorch modules (torch.py).

Both are optional extras (``onnx``, ``torch``) and are imported only when asked for:
``from minirattn.interop import onnx`` / ``torch``. Usage: docs/using.md.
"""
