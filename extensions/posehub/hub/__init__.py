"""What runs in the hub process on one machine (and the hub pod on Kubernetes): the spawner,
config application, workspace preparation, accounts, limits, mounts, S3 credentials, the cost gate, `posehub up`."""
