"""Image encoders into a generator's W+: pSp, e4e and their ReStyle (iterative) versions, with the
IR-SE50 backbone they share, read from the authors' published checkpoints."""
