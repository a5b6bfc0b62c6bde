// Package infra is the boundary between the install stages and a cloud:
// stages speak in templates, VMs and nodes; a provider (proxmox, openstack)
// turns that into API calls. Stages never import a cloud SDK.
package infra

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/state"
)

// ErrNotImplemented marks a provider feature that does not exist yet.
var ErrNotImplemented = errors.New("not implemented yet")

// Node is one hypervisor host as the provider sees it.
type Node struct {
	Name      string
	Online    bool
	CPUs      int
	CPUUsed   float64  // fraction 0..1 of CPUs busy
	MemTotal  int64    // bytes
	MemUsed   int64    // bytes
	Version   string   // hypervisor version, e.g. "9.1.2"
	Bridges   []string // nil: unknown (not checked)
	Storages  []Storage
	Reachable bool // the provider could talk to this node's API
}

// MemFree is what placement compares.
func (n Node) MemFree() int64 { return n.MemTotal - n.MemUsed }

// Storage is a storage pool on a node.
type Storage struct {
	Name    string
	Type    string
	Content []string // PVE content types: images, import, iso, snippets, ...
	Shared  bool
	Active  bool
	Enabled bool
	Total   int64
	Avail   int64
}

// Allows reports whether the storage takes the given content type.
func (s Storage) Allows(content string) bool {
	for _, c := range s.Content {
		if c == content {
			return true
		}
	}
	return false
}

// Image is a cloud image to turn into a template.
type Image struct {
	Name              string // e.g. debian-12
	URL               string // where the node (or the installer) downloads it
	FileName          string // name on import storage, ending .qcow2/.raw
	Checksum          string // hex digest
	ChecksumAlgorithm string // sha256 or sha512
	LocalPath         string // air-gapped: a file on this machine to upload instead
	Size              int64  // bytes, when known
}

// TemplateSpec asks for one template on one node.
type TemplateSpec struct {
	Image   Image
	Node    string
	Name    string // deterministic, e.g. opencsp-lab-debian-12
	Tag     string // opencsp-<cluster>
	Storage string // disk storage
	Import  string // storage holding the image file (content import)
	Bridge  string
	VLAN    int
}

// Template is a VM template the provider found or made.
type Template struct {
	ID   int
	Node string
	Name string
}

// VMSpec describes the management VM.
type VMSpec struct {
	Name      string
	Tag       string
	Template  Template
	Node      string // target node
	Storage   string
	Cores     int
	MemoryMiB int
	DiskGiB   int
	Bridge    string
	VLAN      int
	// Cloud-init.
	User         string
	SSHKeys      []string
	DHCP         bool
	Address      netip.Prefix
	Gateway      netip.Addr
	DNS          []netip.Addr
	SearchDomain string
}

// VM is a virtual machine the provider found or made.
type VM struct {
	ID      int
	Node    string
	Name    string
	Running bool
}

// ISO is a local ISO file the provider puts on ISO storage.
type ISO struct {
	LocalPath         string
	FileName          string // name on the storage, ending .iso
	Size              int64
	Checksum          string // hex digest, checked by the hypervisor on upload
	ChecksumAlgorithm string // e.g. sha256
}

// InstallPhase is where a VM installed from the appliance ISO stands; each
// phase is read from the cloud, so an interrupted install resumes.
type InstallPhase int

const (
	// InstallPending: created to boot the ISO, not (successfully) started yet.
	InstallPending InstallPhase = iota
	// InstallRunning: booted from the ISO; the appliance is working.
	InstallRunning
	// InstallPoweredOff: the appliance ran and powered off; the VM still
	// boots the ISO.
	InstallPoweredOff
	// InstallDone: the VM boots from its disk.
	InstallDone
)

func (p InstallPhase) String() string {
	return [...]string{"pending", "running the appliance", "powered off after the appliance", "boots from disk"}[p]
}

// ApplianceInstaller is what provision method appliance needs from a
// provider besides Provider: the VM is installed by booting the appliance
// ISO on an empty disk instead of cloning a template.
type ApplianceInstaller interface {
	// EnsureISO uploads the ISO to storage on node unless the same volume
	// with the same size is there; it returns the volume id.
	EnsureISO(ctx context.Context, node, storage string, iso ISO, tasks Tasks, sink events.Sink) (string, error)
	// EnsureApplianceVM creates (unless found by name and tag) a VM with an
	// empty disk of spec.DiskGiB and the ISO first in its boot order; a
	// found VM that has not booted yet gets the ISO set. Not started.
	EnsureApplianceVM(ctx context.Context, spec VMSpec, isoVolume string, tasks Tasks, sink events.Sink) (VM, error)
	// InstallPhase reads where the VM's install stands.
	InstallPhase(ctx context.Context, vm VM) (InstallPhase, error)
	// WaitPowerOff waits until the appliance powers the VM off (ctx bounds it).
	WaitPowerOff(ctx context.Context, vm VM) error
	// BootFromDisk checks that the appliance wrote the disk, then detaches
	// the ISO and makes the disk the boot device (the VM must be stopped).
	BootFromDisk(ctx context.Context, vm VM, tasks Tasks) error
}

// Tasks lets a provider record long-running task ids in the install state
// before waiting on them, so an interrupted run re-attaches instead of
// starting the work again. stages.Env implements it.
type Tasks interface {
	TrackTask(t state.Task) error
	FinishTask(id string) error
	InFlight() []state.Task
}

// Problem is one preflight finding: what is wrong and how to fix it.
type Problem struct {
	Check string
	Msg   string
}

func (p Problem) String() string { return p.Check + ": " + p.Msg }

// Problems reports every preflight finding at once.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = "  - " + p.String()
	}
	return fmt.Sprintf("%d preflight check(s) failed:\n%s", len(ps), strings.Join(lines, "\n"))
}

// Provider is what the stages need from a cloud. Every Ensure method is
// idempotent: it finds an existing resource by name and tag before creating.
type Provider interface {
	// Preflight checks the API, credentials and the resources the config
	// names, and returns every problem found (nil when all is well).
	Preflight(ctx context.Context) (Problems, error)
	// Nodes describes the hosts the install may use.
	Nodes(ctx context.Context) ([]Node, error)
	// EnsureTemplate makes sure the template exists on spec.Node, fetching
	// the image first when needed. Progress goes to sink.
	EnsureTemplate(ctx context.Context, spec TemplateSpec, tasks Tasks, sink events.Sink) (Template, error)
	// FindTemplate looks a template up by name and tag on a node.
	FindTemplate(ctx context.Context, name, tag, node string) (Template, bool, error)
	// EnsureVM clones, configures and resizes the VM (not started).
	EnsureVM(ctx context.Context, spec VMSpec, tasks Tasks, sink events.Sink) (VM, error)
	// FindVM looks a VM up by name and tag anywhere in the cluster.
	FindVM(ctx context.Context, name, tag string) (VM, bool, error)
	// StartVM starts the VM if it is not running.
	StartVM(ctx context.Context, vm VM, tasks Tasks) error
	// WaitAddress waits until the VM reports an address (guest agent).
	WaitAddress(ctx context.Context, vm VM) (netip.Addr, error)
	// DeleteVM stops and removes a VM the installer created.
	DeleteVM(ctx context.Context, vm VM, tasks Tasks) error
}
