"""`python -m trainer_entrypoint initialize`: the initializer Job's command.

Before a job's workers start, it fetches every remote source of the job (hf://, s3://) once into
the cache volume, each into an entry keyed by the source and its resolved revision (a Hub commit
sha, a digest of an S3 listing). Entries are shared by jobs: a complete one is used as it is, and
two initializers wanting the same entry download it once. It serves its report on /progress while
it works, writes it as the job's manifest (which the job's pods read, offline, see
trainer_entrypoint.config) and as its termination message (which the operator reads into
status.initialization).

- plan:     the job's remote sources, each once
- cache:    an entry's folder, its lock, its marker
- hub, s3:  resolving a revision, listing its files, fetching one file
- fetch:    one source into its entry: retries and checksums
- progress: the report so far, served over HTTP
- main:     the command
"""
