"""Tools that run outside the daemon: fetching the official OpenFace 3.0 checkpoints and exporting them
to ONNX. They need PyTorch (the ``export`` extra); nothing in ``daemon.core`` or ``daemon.shell`` imports
this package, so the daemon and its workers never load torch."""
