// Package config defines the install configuration (opencsp.yaml), its strict
// decoding with positions, profile merging, defaults, validation and schema.
package config

// APIVersion and Kind identify an install config document.
const (
	APIVersion = "opencsp.io/v1alpha1"
	Kind       = "InstallConfig"
)

// Config is the whole install configuration after profile merge and defaults.
type Config struct {
	APIVersion     string                     `yaml:"apiVersion" jsonschema:"required,enum=opencsp.io/v1alpha1"`
	Kind           string                     `yaml:"kind" jsonschema:"required,enum=InstallConfig"`
	Profile        string                     `yaml:"profile,omitempty" jsonschema:"enum=standalone,enum=cluster,enum=openstack,enum=appliance,enum=minimal,description=Preset merged under this file (the file always wins). Default standalone."`
	Cluster        Cluster                    `yaml:"cluster" jsonschema:"required"`
	Infrastructure Infrastructure             `yaml:"infrastructure"`
	Images         []string                   `yaml:"images,omitempty" jsonschema:"description=Cloud images to turn into VM templates: names from images/\\, local image files (.qcow2/.raw/.img)\\, or image definition files (.yaml: name\\, url\\, checksumURL\\, checksumAlgorithm) e.g. for a mirror."`
	ManagementVM   ManagementVM               `yaml:"managementVM"`
	K3s            K3s                        `yaml:"k3s"`
	OpsRepo        OpsRepo                    `yaml:"opsRepo"`
	Components     map[string]ComponentConfig `yaml:"components,omitempty" jsonschema:"description=Per Core component: enable/disable\\, chart version and values overrides."`
	Secrets        Secrets                    `yaml:"secrets"`
	Flux           Flux                       `yaml:"flux,omitempty"`
	Appliance      Appliance                  `yaml:"appliance,omitempty" jsonschema:"description=The appliance ISO (opencsp image iso) and how it installs the management node (managementVM.provision.method: appliance)."`

	// Source is where the config was read from (not part of the file).
	Source string `yaml:"-" json:"-"`
	// baseDir anchors relative paths in the file.
	baseDir string
	// raw is the file as read, for NodeYAML.
	raw []byte
}

// Cluster names the OpenCSP installation.
type Cluster struct {
	Name   string `yaml:"name" jsonschema:"required,pattern=^[a-z]([a-z0-9-]{0\\,30}[a-z0-9])?$,description=Cluster name: lower-case DNS label; tags resources as opencsp-<name>."`
	Domain string `yaml:"domain" jsonschema:"required,description=Base DNS domain; services appear as <service>.<domain>."`
}

// Infrastructure selects and configures the provider.
type Infrastructure struct {
	Provider  string     `yaml:"provider" jsonschema:"enum=proxmox,enum=openstack"`
	Proxmox   *Proxmox   `yaml:"proxmox,omitempty"`
	OpenStack *OpenStack `yaml:"openstack,omitempty"`
}

// Proxmox configures a Proxmox VE host or cluster.
type Proxmox struct {
	Endpoint    string    `yaml:"endpoint" jsonschema:"description=API URL\\, e.g. https://pve1.example.net:8006"`
	TokenID     string    `yaml:"tokenID" jsonschema:"description=API token id USER@REALM!NAME"`
	TokenSecret SecretRef `yaml:"tokenSecret" jsonschema:"description=Reference to the token secret: env:NAME or file:PATH"`
	TLS         TLS       `yaml:"tls,omitempty"`
	Nodes       []string  `yaml:"nodes,omitempty" jsonschema:"description=Nodes the installer may use; one node pins placement; empty means all online nodes."`
	Storage     Storage   `yaml:"storage"`
	Network     Network   `yaml:"network"`
	// UploadImages makes the installer fetch cloud images itself and upload
	// them, for nodes that cannot reach the image URLs (air-gapped).
	UploadImages bool `yaml:"uploadImages,omitempty" jsonschema:"description=Fetch cloud images on this machine and upload them to Proxmox instead of letting the node download them (nodes without internet access)."`
}

// TLS says how the installer trusts an HTTPS endpoint.
type TLS struct {
	CAFile      string `yaml:"caFile,omitempty" jsonschema:"description=PEM file with the CA that signed the endpoint's certificate."`
	Fingerprint string `yaml:"fingerprint,omitempty" jsonschema:"description=SHA-256 fingerprint of the endpoint's certificate (hex\\, colons optional)."`
	Insecure    bool   `yaml:"insecure,omitempty" jsonschema:"description=Skip certificate verification. Only for labs."`
}

// Storage names the Proxmox storages used for each kind of content.
type Storage struct {
	Templates string `yaml:"templates" jsonschema:"description=Storage for template disks (content images)."`
	Disks     string `yaml:"disks" jsonschema:"description=Storage for VM disks (content images)."`
	Images    string `yaml:"images" jsonschema:"description=Storage for downloaded cloud images (content import)."`
	ISO       string `yaml:"iso" jsonschema:"description=Storage for ISO files and cloud-init snippets (content iso)."`
}

// Network is the VM network attachment on Proxmox.
type Network struct {
	Bridge string `yaml:"bridge" jsonschema:"description=Linux bridge\\, e.g. vmbr0"`
	VLAN   int    `yaml:"vlan,omitempty" jsonschema:"minimum=0,maximum=4094,description=VLAN tag (0 = untagged)"`
}

// OpenStack configures an OpenStack cloud (provisioning is not implemented yet).
type OpenStack struct {
	AuthURL                     string    `yaml:"authURL"`
	Region                      string    `yaml:"region,omitempty"`
	ApplicationCredentialID     string    `yaml:"applicationCredentialID"`
	ApplicationCredentialSecret SecretRef `yaml:"applicationCredentialSecret"`
	Network                     string    `yaml:"network"`
	Flavor                      string    `yaml:"flavor"`
	TLS                         TLS       `yaml:"tls,omitempty"`
}

// ManagementVM sizes and connects the VM that runs K3s and the Core.
type ManagementVM struct {
	Name      string    `yaml:"name,omitempty" jsonschema:"description=VM name; default opencsp-<cluster>-mgmt"`
	Node      string    `yaml:"node,omitempty" jsonschema:"description=Pin the VM to this Proxmox node."`
	Cores     int       `yaml:"cores" jsonschema:"minimum=1,maximum=512"`
	MemoryMiB int       `yaml:"memoryMiB" jsonschema:"minimum=4096"`
	DiskGiB   int       `yaml:"diskGiB" jsonschema:"minimum=20"`
	Image     string    `yaml:"image,omitempty" jsonschema:"description=Which of images: the VM is cloned from; default the first."`
	Network   VMNetwork `yaml:"network"`
	SSH       SSH       `yaml:"ssh"`
	Provision Provision `yaml:"provision,omitempty"`
}

// Provision methods of the management VM.
const (
	ProvisionCloudImage = "cloudimage"
	ProvisionAppliance  = "appliance"
)

// Provision says how the management VM's disk is made.
type Provision struct {
	Method string `yaml:"method,omitempty" jsonschema:"enum=cloudimage,enum=appliance,description=cloudimage (default): clone a cloud-image template and configure it with cloud-init. appliance: boot the appliance ISO (appliance.iso) on an empty VM and let it install itself."`
}

// VMNetwork is the guest network: DHCP or a static address.
type VMNetwork struct {
	DHCP         bool     `yaml:"dhcp,omitempty"`
	Address      string   `yaml:"address,omitempty" jsonschema:"description=Static address in CIDR form\\, e.g. 192.0.2.10/24"`
	Gateway      string   `yaml:"gateway,omitempty"`
	DNS          []string `yaml:"dns,omitempty"`
	SearchDomain string   `yaml:"searchDomain,omitempty"`
}

// SSH is how the installer logs in to the management VM.
type SSH struct {
	User               string   `yaml:"user" jsonschema:"description=Cloud-init user (non-root; sudo is used)."`
	PublicKeys         []string `yaml:"publicKeys,omitempty" jsonschema:"description=Authorized keys for the user (OpenSSH format)."`
	PrivateKeyFile     string   `yaml:"privateKeyFile,omitempty" jsonschema:"description=Private key the installer logs in with; empty means ssh-agent."`
	HostKeyFingerprint string   `yaml:"hostKeyFingerprint,omitempty" jsonschema:"description=Expected SHA256:... host key fingerprint; empty means trust on first use."`
	Port               int      `yaml:"port,omitempty" jsonschema:"minimum=1,maximum=65535"`
}

// K3s selects the K3s release and how it is installed.
type K3s struct {
	Version   string       `yaml:"version" jsonschema:"description=K3s release\\, e.g. v1.33.5+k3s1"`
	ExtraArgs []string     `yaml:"extraArgs,omitempty"`
	TLSSANs   []string     `yaml:"tlsSANs,omitempty" jsonschema:"description=Extra names for the API server certificate."`
	Disable   []string     `yaml:"disable,omitempty" jsonschema:"description=Packaged components to disable\\, e.g. servicelb."`
	Artifacts K3sArtifacts `yaml:"artifacts,omitempty"`
}

// K3sArtifacts says where K3s release files come from.
type K3sArtifacts struct {
	Mirror    string `yaml:"mirror,omitempty" jsonschema:"description=Base URL of a release mirror (default GitHub releases)."`
	AirgapDir string `yaml:"airgapDir,omitempty" jsonschema:"description=Local directory holding the release files (air-gapped)."`
}

// OpsRepo is the git repository Flux syncs from.
type OpsRepo struct {
	URL    string  `yaml:"url" jsonschema:"description=ssh://\\, https:// or file:// URL of the ops repository."`
	Branch string  `yaml:"branch,omitempty"`
	Path   string  `yaml:"path,omitempty" jsonschema:"description=Folder in the repo for this cluster; default clusters/<cluster>."`
	Auth   GitAuth `yaml:"auth,omitempty"`
}

// GitAuth authenticates to the ops repo: an SSH key or a token.
type GitAuth struct {
	SSHKeyFile         string    `yaml:"sshKeyFile,omitempty"`
	HostKeyFingerprint string    `yaml:"hostKeyFingerprint,omitempty" jsonschema:"description=Expected SHA256:... host key of the git server."`
	Username           string    `yaml:"username,omitempty"`
	Token              SecretRef `yaml:"token,omitempty" jsonschema:"description=HTTPS token reference: env:NAME or file:PATH"`
}

// ComponentConfig overrides one Core component.
type ComponentConfig struct {
	Enabled *bool          `yaml:"enabled,omitempty"`
	Version string         `yaml:"version,omitempty" jsonschema:"description=Chart version override."`
	Values  map[string]any `yaml:"values,omitempty" jsonschema:"description=Helm values merged over the defaults."`
}

// Secrets configures how generated secrets are protected.
type Secrets struct {
	AgeKeyFile string `yaml:"ageKeyFile,omitempty" jsonschema:"description=age private key used for SOPS; generated (0600) when missing. Default <state-dir>/age.key"`
}

// Flux configures the Flux installation.
type Flux struct {
	Registry string `yaml:"registry,omitempty" jsonschema:"description=Registry mirror that replaces ghcr.io/fluxcd in the Flux controller images (air-gapped)\\, e.g. registry.example.net/fluxcd"`
}

// After* are what the appliance does once it has written the disk.
const (
	AfterPoweroff = "poweroff"
	AfterReboot   = "reboot"
)

// DefaultApplianceISO is where the appliance ISO is written and read,
// relative to the config file.
const DefaultApplianceISO = "opencsp-appliance.iso"

// TargetDiskAuto picks the only empty disk of the machine.
const TargetDiskAuto = "auto"

// Appliance configures the appliance ISO: what the build puts in it and what
// the appliance does when booted. Command-line flags of opencsp image iso
// override these.
type Appliance struct {
	ISO        string          `yaml:"iso,omitempty" jsonschema:"description=The appliance ISO: written by opencsp image iso and booted by provision method appliance. Relative to this file. Default opencsp-appliance.iso"`
	TargetDisk string          `yaml:"targetDisk,omitempty" jsonschema:"description=Disk the appliance installs to: auto (default\\, the only empty disk) or an absolute /dev path\\, e.g. /dev/sda"`
	Wipe       bool            `yaml:"wipe,omitempty" jsonschema:"description=Let the appliance overwrite a disk that already has partitions or data. Default false."`
	After      string          `yaml:"after,omitempty" jsonschema:"enum=poweroff,enum=reboot,description=What the appliance does when done: poweroff (default) or reboot."`
	Kernel     ApplianceKernel `yaml:"kernel,omitempty" jsonschema:"description=The kernel of the appliance: a Debian linux-image .deb\\, as a local path or a URL with its sha256."`
	OSImage    string          `yaml:"osImage,omitempty" jsonschema:"description=Raw OS image (GPT) the appliance writes to the target disk. Relative to this file."`
}

// ApplianceKernel is a Debian linux-image .deb: a local file, or a URL
// fetched (and checked against sha256) through the artifact cache.
type ApplianceKernel struct {
	Deb    string `yaml:"deb,omitempty" jsonschema:"description=Local linux-image .deb\\, relative to this file."`
	URL    string `yaml:"url,omitempty" jsonschema:"description=https or http URL of a linux-image .deb (needs sha256)."`
	SHA256 string `yaml:"sha256,omitempty" jsonschema:"pattern=^[0-9a-f]{64}$,description=Hex sha256 of the .deb at url."`
}
