"""Run and sweep directories: the life cycle of a job (markers, config hash, data fingerprint, resume, lock)
and the discovery of a sweep's jobs. No Lightning, no Hydra runtime: readers and writers of files."""
