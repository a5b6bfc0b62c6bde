package manifests

import "slices"

// Chart is the pinned upstream source of a layer's HelmRelease (or, for
// chart-less components, of its image).
type Chart struct {
	Component string
	Layer     string
	// RepoURL is the HelmRepository URL (oci:// for OCI repositories), ""
	// for components installed from plain manifests.
	RepoURL string
	Chart   string
	// Version is the exact chart version pinned in the HelmRelease (or the
	// image tag for chart-less components).
	Version    string
	AppVersion string
	// Verify marks versions chosen inside a range given by the reference
	// (core-components.md): they plausibly exist upstream but were not seen.
	Verify bool
}

var chartTable = []Chart{
	{Component: "cert-manager", Layer: "cert-manager", RepoURL: "https://charts.jetstack.io", Chart: "cert-manager", Version: "v1.20.2", AppVersion: "v1.20.2", Verify: true},
	{Component: "cloudnative-pg", Layer: "cnpg-operator", RepoURL: "https://cloudnative-pg.github.io/charts", Chart: "cloudnative-pg", Version: "0.29.0", AppVersion: "1.30.0"},
	{Component: "valkey", Layer: "valkey", RepoURL: "https://valkey.io/valkey-helm/", Chart: "valkey", Version: "0.9.4", AppVersion: "9.0.3", Verify: true},
	{Component: "seaweedfs", Layer: "seaweedfs", RepoURL: "https://seaweedfs.github.io/seaweedfs/helm", Chart: "seaweedfs", Version: "4.44.0", AppVersion: "4.44"},
	{Component: "tetragon", Layer: "tetragon", RepoURL: "https://helm.cilium.io", Chart: "tetragon", Version: "1.7.0", AppVersion: "1.7.0"},
	{Component: "system-upgrade-controller", Layer: "system-upgrade-controller", Chart: "rancher/system-upgrade-controller (image)", Version: "v0.20.1", AppVersion: "v0.20.1"},
	{Component: "tofu-controller", Layer: "tofu-controller", RepoURL: "oci://ghcr.io/flux-iac/charts", Chart: "tofu-controller", Version: "0.16.5", AppVersion: "v0.16.5"},
	{Component: "zitadel", Layer: "zitadel", RepoURL: "https://charts.zitadel.com", Chart: "zitadel", Version: "9.34.0", AppVersion: "v4.13.0"},
	{Component: "loki", Layer: "loki", RepoURL: "https://grafana-community.github.io/helm-charts", Chart: "loki", Version: "18.11.0", AppVersion: "3.7.6"},
	{Component: "tempo", Layer: "tempo", RepoURL: "https://grafana-community.github.io/helm-charts", Chart: "tempo", Version: "2.2.4", AppVersion: "2.10.8"},
	{Component: "mimir", Layer: "mimir", RepoURL: "https://grafana.github.io/helm-charts", Chart: "mimir-distributed", Version: "6.0.3", AppVersion: "3.0.x", Verify: true},
	{Component: "grafana", Layer: "grafana", RepoURL: "https://grafana-community.github.io/helm-charts", Chart: "grafana", Version: "12.11.1", AppVersion: "12.x"},
	{Component: "otel-collector", Layer: "otel-collector", RepoURL: "https://open-telemetry.github.io/opentelemetry-helm-charts", Chart: "opentelemetry-collector", Version: "0.170.0", AppVersion: "0.x"},
	{Component: "vector", Layer: "vector", RepoURL: "https://helm.vector.dev", Chart: "vector", Version: "0.57.0", AppVersion: "0.x"},
	{Component: "lago", Layer: "lago", RepoURL: "https://charts.getlago.com", Chart: "lago", Version: "1.27.1", AppVersion: "1.32.x"},
	{Component: "semaphore", Layer: "semaphore", RepoURL: "https://semaphoreui.github.io/charts", Chart: "semaphore", Version: "16.2.2", AppVersion: "2.18.3"},
	{Component: "teleport", Layer: "teleport", RepoURL: "https://charts.releases.teleport.dev", Chart: "teleport-cluster", Version: "18.11.1", AppVersion: "18.11.1"},
	{Component: "console", Layer: "console", Chart: "OpenCSP Console (images CONSOLE_FRONTEND_IMAGE, CONSOLE_BACKEND_IMAGE)", Version: "v0.1.0", AppVersion: "v0.1.0", Verify: true},
}

// Charts returns the pinned upstream version of every component.
func Charts() []Chart { return slices.Clone(chartTable) }

// ChartFor returns the chart pinned for a component.
func ChartFor(component string) (Chart, bool) {
	for _, c := range chartTable {
		if c.Component == component {
			return c, true
		}
	}
	return Chart{}, false
}
