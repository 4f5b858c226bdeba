"""Sensible bounds on sizes in configs and traces: far above real deployments, low enough to catch typos."""

MAX_SIDE_PX = 16_384  # image width or height (SDXL is 1024; a 2**40-pixel side is a typo)
MAX_STEPS = 10_000  # denoising steps N (NIRVANA: 50)
MAX_GPUS_PER_POOL = 100_000
MAX_BATCH = 4_096
MAX_CAPACITY_NOISES = 2**40
MAX_CAPACITY_BYTES = 2**60
MAX_LATENT_CHANNELS = 1_024
MAX_VAE_SCALE = 1_024
#: the longest run-folder name: Linux file systems (ext4, xfs, tmpfs) take 255-byte names, and a run is written
#: first as ``.NAME.partial`` (10 bytes more)
MAX_RUN_FOLDER_NAME_BYTES = 255 - len("..partial")
