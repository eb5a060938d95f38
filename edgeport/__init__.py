"""edgeport: take a TensorFlow image classifier to phones and devices, and prove every file.

One installed package, three jobs::

    from edgeport.train import fit, make_config            # needs edgeport[tensorflow]
    from edgeport.export import export_model, check_parity  # needs edgeport[tensorflow]
    from edgeport.mobile_demo import load_model             # device side: numpy, Pillow, LiteRT

``edgeport.errors`` (the error family) and ``edgeport.fileio`` (atomic writes) are the
device-safe base every job builds on. Importing ``edgeport`` imports nothing heavy.
"""

__version__ = "0.2.0"

__all__ = ["__version__"]
