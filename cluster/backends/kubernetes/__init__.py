"""The Kubernetes backend (Volcano, Kubeflow training operator, Cluster API) and its pure builders.

`backend.KubernetesBackend` is the backend; `manifests` and `queues` build plain-dict objects;
`status` maps cluster objects back to portal terms; `errors` reads API `Status` answers; `api`
is the only module that imports the `kubernetes` client.
"""
