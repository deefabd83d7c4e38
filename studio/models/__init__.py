"""The model library: the checkpoints, LoRAs, embeddings, VAEs, ControlNets and
upscalers a user already has, found by name in the folders they name (`--models DIR`,
STUDIO_MODELS) in the layouts of A1111/Forge, ComfyUI, InvokeAI and Fooocus, read where
they are. layout finds the kind folders under a DIR, scan walks one (bounded), library
indexes the names, hashes remembers the short hashes and describe reads what a file
says about itself. This `__init__` imports nothing."""
