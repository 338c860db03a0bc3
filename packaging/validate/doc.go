// Package validate holds the offline checks of handoff's deployment
// examples: the Kubernetes manifests, the Nomad job and the handoff
// config files they carry. It is a module of its own, so that the main
// module does not depend on k8s.io or on HCL. It is not a library:
// everything is in its tests.
package validate
