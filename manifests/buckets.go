package manifests

import "slices"

// Bucket is an S3 bucket that the seaweedfs layer creates at install time
// (SeaweedFS bucket hook). User buckets are created at run time by the
// Console and Terraform, not here.
type Bucket struct {
	Name      string
	Versioned bool
	Purpose   string
}

var bucketTable = []Bucket{
	{Name: "management", Purpose: "OpenCSP management data (Console exports, backups)"},
	{Name: "terraform-state", Versioned: true, Purpose: "OpenTofu state of tofu-controller Terraform objects"},
	{Name: "cloud-images", Purpose: "cloud images and VM templates"},
	{Name: "monitoring-logs", Purpose: "long-term log archive"},
	{Name: "loki-chunks", Purpose: "Loki chunks and TSDB index"},
	{Name: "loki-ruler", Purpose: "Loki ruler storage"},
	{Name: "loki-admin", Purpose: "Loki admin storage"},
	{Name: "tempo-traces", Purpose: "Tempo trace blocks"},
	{Name: "mimir-blocks", Purpose: "Mimir TSDB blocks"},
	{Name: "mimir-ruler", Purpose: "Mimir ruler storage"},
	{Name: "mimir-alertmanager", Purpose: "Mimir alertmanager storage"},
	{Name: "lago", Purpose: "Lago invoices and exports"},
}

// Buckets returns the buckets created at install time.
func Buckets() []Bucket { return slices.Clone(bucketTable) }
