// Package manifeststest checks relay's Kubernetes manifests: the kustomize
// base in k8s/ and the Helm chart in deploy/helm/relay, rendered with
// `helm template`. Every object is decoded strictly into the Kubernetes API
// types (an unknown or misspelt field fails) and checked for the invariants
// relay's drain and security depend on.
//
// It is a module of its own so that the Kubernetes dependencies stay out of
// relay's go.mod. Run it with `go test ./...` from this directory (helm on
// PATH, or HELM=/path/to/helm); deploy/ci.sh does.
package manifeststest
