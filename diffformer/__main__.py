"""`python -m diffformer ...` runs the command line; torchrun launches it so: `torchrun ... -m diffformer train`."""

from diffformer.cli import app

app(prog_name="diffformer")
