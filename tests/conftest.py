import os

# Tests never talk to the wandb server; subprocess runs inherit this too.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
