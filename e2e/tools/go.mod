// The e2e tools module: builds the real etcd, kube-apiserver, kubectl and Flux controllers the
// e2e tests run, from the pinned modules under pins/ (one module per tool, so each resolves its
// dependencies exactly as upstream does and the product's go.mod never requires them).
module github.com/opencsp/installer/e2e/tools

go 1.26.0
