// Package opsrepo renders the ops repository Flux syncs from and keeps it in
// git.
//
// Render turns the install config into a Tree: components/ (a copy of
// manifests.FS()), the cluster folder (clusters.Render: flux-system, layer
// Kustomizations, cluster-vars) and one SOPS-encrypted Secret per
// manifests.Secrets() entry, with values that are generated once and then
// read back from the repository on every later render. Rendering is
// deterministic: the same inputs and the same existing repository give the
// same bytes, and an encrypted file is kept verbatim while its plaintext is
// unchanged.
//
// WriteDir writes a Tree into a directory (a review copy or a git working
// copy) under the ownership rules of README.md; Sync does so in a git
// working copy of the ops repo, commits only when something changed and
// pushes without ever forcing.
package opsrepo
