package config

// Components lists the Core components a config may enable, disable or
// override, in rollout order. The manifests/ folders must match these names.
var componentNames = []string{
	"cert-manager",
	"cloudnative-pg",
	"valkey",
	"seaweedfs",
	"tetragon",
	"system-upgrade-controller",
	"zitadel",
	"tofu-controller",
	"loki",
	"tempo",
	"mimir",
	"grafana",
	"otel-collector",
	"vector",
	"lago",
	"semaphore",
	"teleport",
	"console",
}

// ComponentNames returns the known Core component names in rollout order.
func ComponentNames() []string { return append([]string(nil), componentNames...) }
