"""eusdx: shared plumbing (configuration, errors, logging, CLI) for the eusdx packages.

The science lives in ``models``, the network in ``dicom_node``, the pipeline in ``worker`` and the
log in ``audit``; this package only holds what all of them share and the command line that starts them.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
