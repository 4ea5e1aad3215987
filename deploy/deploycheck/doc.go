// Package deploycheck validates CHOM's deployment files offline, as CI runs
// them: the compose file through compose-go (the loader Docker Compose uses),
// the Kubernetes manifests through kustomize's Go API with every object
// decoded strictly into its k8s.io/api type (an unknown field fails), the KEDA
// ScaledObject against the openAPIV3Schema of KEDA's own CRD, and every
// subcommand, flag and CHOM_* variable that the compose file, the manifests,
// the Dockerfile, the systemd units and the env files name against the one
// configuration loader (the settings table of internal/stack and the command
// table of the chom binary).
//
// It is imported only by its tests: none of it reaches the chom binary.
package deploycheck
