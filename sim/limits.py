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
#: first as ``.NAME-partial`` (sim.fileio.partial_name: 9 bytes more)
MAX_RUN_FOLDER_NAME_BYTES = 255 - len(".-partial")
#: the latest simulated time, in seconds (317 years): beyond it float64 seconds lose the microseconds a request's
#: stages take (trace arrivals, and arrivals x trace.time_scale, must stay below it)
MAX_ARRIVAL_S = 1e10
#: trace.time_scale: a million times denser or sparser than the trace (0.5 is twice the load)
MIN_TIME_SCALE, MAX_TIME_SCALE = 1e-6, 1e6
#: hardware.batch_window_s: a GPU holding a partial batch for more than an hour is a typo
MAX_BATCH_WINDOW_S = 3600.0
#: hardware.step_jitter_cv: a coefficient of variation above 10 leaves the lognormal meaningless
MAX_STEP_JITTER_CV = 10.0
