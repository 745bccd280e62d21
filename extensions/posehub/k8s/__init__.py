"""PoseHub on Kubernetes: the charts' values rendered from posehub.yaml (:mod:`.helm`), what a node of an
instance type can give (:mod:`.nodes`), the hub pod's hooks (:mod:`.hubpod`), the command line (:mod:`.cli`).
Nothing here imports the one-machine spawner."""
