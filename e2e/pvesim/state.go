package pvesim

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

type node struct {
	name       string
	id         int
	ip         string
	online     bool
	cpus       int
	memTotal   int64
	memUsed    int64
	version    string
	bridges    []string
	boot       time.Time
	dnsServers []string
	dnsSearch  string
	pstart     int64 // clock ticks since boot, grows with uptime
}

// storageCfg is one entry of storage.cfg (cluster wide).
type storageCfg struct {
	id       string
	typ      string // dir, lvmthin, nfs
	content  map[string]bool
	shared   bool
	disabled bool
	path     string // dir/nfs mount path
	vg       string // lvmthin volume group
	nodes    map[string]bool
}

// storeInst is a storage as seen on one node (or once for shared storage):
// capacity, activation and its volumes.
type storeInst struct {
	cfg      *storageCfg
	node     string // "" for shared storage
	active   bool
	total    int64
	baseUsed int64
	vols     map[string]*volume
}

type volume struct {
	inst    *storeInst
	name    string // volname, e.g. vm-101-disk-0 or import/debian.qcow2
	format  string
	size    int64 // size in bytes (for images the virtual size)
	virtual int64 // virtual size of an import image when it differs (qcow2)
	vmid    int
	content string
	ctime   int64
	file    string // backing file on disk (uploads/downloads)
	base    bool
	parent  string // base volume name of a linked clone
	// blank: allocated empty and never written (no OS to boot);
	// installedFrom: the ISO an appliance run wrote it from.
	blank         bool
	installedFrom string
}

func (v *volume) volid() string { return v.inst.cfg.id + ":" + v.name }

// allocated is the "used" PVE reports: what the storage allocated for the
// volume (lvs data, du of the file). A blank thin or sparse volume has
// nothing allocated; written ones are accounted at their full size.
func (v *volume) allocated() int64 {
	if v.blank {
		return 0
	}
	return v.size
}

func (i *storeInst) used() int64 {
	u := i.baseUsed
	for _, v := range i.vols {
		u += v.size
	}
	return u
}

func (i *storeInst) avail() int64 {
	a := i.total - i.used()
	if a < 0 {
		return 0
	}
	return a
}

type vm struct {
	vmid       int
	node       string
	conf       map[string]string
	pending    map[string]string
	pendingDel []string
	running    bool
	startedAt  time.Time
	pid        int
	ciApplied  map[string]string
	agentDown  bool
	agentUpAt  time.Time
	// The guest: noOS while an installer ISO or a blank disk was booted;
	// bootGen counts boots and stops so a late appliance run is ignored;
	// console holds the appliance's serial console lines.
	noOS        bool
	bootGen     int
	guestCancel context.CancelFunc
	console     []string
}

func (v *vm) name() string {
	if n := v.conf["name"]; n != "" {
		return n
	}
	return fmt.Sprintf("VM %d", v.vmid)
}

func (v *vm) isTemplate() bool { return v.conf["template"] == "1" }

func contentSet(list ...string) map[string]bool {
	m := map[string]bool{}
	for _, c := range list {
		m[c] = true
	}
	return m
}

func (s *Server) initState() {
	o := s.opts
	for i, name := range o.NodeNames {
		n := &node{
			name:       name,
			id:         i + 1,
			ip:         fmt.Sprintf("192.0.2.%d", 10+i),
			online:     true,
			cpus:       o.CPUs,
			memTotal:   o.MemoryBytes,
			memUsed:    o.MemoryUsed,
			version:    o.PVEVersion,
			bridges:    append([]string(nil), o.Bridges...),
			boot:       s.start.Add(-time.Duration(3600+i*60) * time.Second),
			dnsServers: append([]string(nil), o.DNSServers...),
			dnsSearch:  o.DNSSearch,
			pstart:     int64(360000 + i*6000),
		}
		s.nodes = append(s.nodes, n)
	}
	local := &storageCfg{id: "local", typ: "dir", path: "/var/lib/vz",
		content: contentSet("iso", "vztmpl", "backup", "import", "snippets", "images")}
	lvm := &storageCfg{id: "local-lvm", typ: "lvmthin", vg: "pve",
		content: contentSet("images", "rootdir")}
	s.stores = []*storageCfg{local, lvm}
	for _, n := range s.nodes {
		s.insts[n.name+"/local"] = &storeInst{cfg: local, node: n.name, active: true, total: o.LocalBytes,
			baseUsed: o.LocalBytes / 20, vols: map[string]*volume{}}
		s.insts[n.name+"/local-lvm"] = &storeInst{cfg: lvm, node: n.name, active: true, total: o.LVMThinBytes,
			vols: map[string]*volume{}}
	}
	if o.SharedStorage {
		nfs := &storageCfg{id: "shared-nfs", typ: "nfs", shared: true, path: "/mnt/pve/shared-nfs",
			content: contentSet("images", "import", "iso")}
		s.stores = append(s.stores, nfs)
		s.insts["/shared-nfs"] = &storeInst{cfg: nfs, active: true, total: o.SharedBytes,
			vols: map[string]*volume{}}
	}
}

func (s *Server) nodeByName(name string) *node {
	for _, n := range s.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

func (s *Server) storageCfg(id string) *storageCfg {
	for _, c := range s.stores {
		if c.id == id {
			return c
		}
	}
	return nil
}

// inst returns the storage instance of sid as seen from node (nil when the
// storage does not exist or is not configured for the node).
func (s *Server) inst(nodeName, sid string) *storeInst {
	c := s.storageCfg(sid)
	if c == nil {
		return nil
	}
	if c.nodes != nil && !c.nodes[nodeName] {
		return nil
	}
	if c.shared {
		return s.insts["/"+sid]
	}
	return s.insts[nodeName+"/"+sid]
}

// checkStorage mirrors PVE::Storage::storage_check_enabled/node + activation.
func (s *Server) checkStorage(nodeName, sid string, needActive bool) (*storeInst, *apiError) {
	c := s.storageCfg(sid)
	if c == nil {
		return nil, errf("storage '%s' does not exist", sid)
	}
	if c.disabled {
		return nil, errf("storage '%s' is disabled", sid)
	}
	in := s.inst(nodeName, sid)
	if in == nil {
		return nil, errf("storage '%s' is not available on node '%s'", sid, nodeName)
	}
	if needActive && !in.active {
		return nil, errf("storage '%s' is not online", sid)
	}
	return in, nil
}

func (s *Server) capacityError(in *storeInst, name string, need int64) *apiError {
	if in.cfg.typ == "lvmthin" {
		ext := func(b int64) int64 { return (b + 4<<20 - 1) / (4 << 20) }
		return errf("lvcreate '%s/%s' error:   Volume group \"%s\" has insufficient free space (%d extents): %d required.",
			in.cfg.vg, name, in.cfg.vg, ext(in.avail()), ext(need))
	}
	return errf("qemu-img: %s: Could not write image: No space left on device", s.volPath(in, name))
}

// volPath returns the filesystem path PVE reports for a volume.
func (s *Server) volPath(in *storeInst, name string) string {
	switch in.cfg.typ {
	case "lvmthin":
		if i := strings.LastIndex(name, "/"); i >= 0 {
			name = name[i+1:]
		}
		return "/dev/" + in.cfg.vg + "/" + name
	}
	switch {
	case strings.HasPrefix(name, "import/"):
		return in.cfg.path + "/" + name
	case strings.HasPrefix(name, "iso/"):
		return in.cfg.path + "/template/" + name
	case strings.HasPrefix(name, "vztmpl/"):
		return in.cfg.path + "/template/cache/" + strings.TrimPrefix(name, "vztmpl/")
	case strings.HasPrefix(name, "snippets/"):
		return in.cfg.path + "/" + name
	}
	return in.cfg.path + "/images/" + name
}

// allocVolume creates a volume with capacity accounting.
func (s *Server) allocVolume(in *storeInst, name, format, content string, vmid int, size int64) (*volume, *apiError) {
	if _, exists := in.vols[name]; exists {
		return nil, errf("volume '%s:%s' already exists", in.cfg.id, name)
	}
	if size > in.avail() {
		return nil, s.capacityError(in, name, size)
	}
	v := &volume{inst: in, name: name, format: format, size: size, vmid: vmid, content: content, ctime: time.Now().Unix()}
	in.vols[name] = v
	return v, nil
}

func (s *Server) freeVolume(v *volume) {
	delete(v.inst.vols, v.name)
	if v.file != "" {
		os.Remove(v.file)
	}
}

// findVolume resolves a volid as seen from node.
func (s *Server) findVolume(nodeName, volid string) (*volume, *apiError) {
	sid, name, ok := strings.Cut(volid, ":")
	if !ok {
		return nil, errf("unable to parse volume ID '%s'", volid)
	}
	in := s.inst(nodeName, sid)
	if in == nil {
		if s.storageCfg(sid) == nil {
			return nil, errf("storage '%s' does not exist", sid)
		}
		return nil, errf("storage '%s' is not available on node '%s'", sid, nodeName)
	}
	v := in.vols[name]
	if v == nil {
		return nil, errf("volume '%s' does not exist", volid)
	}
	return v, nil
}

// diskName returns the next free "vm-ID-disk-N" (or base-) name on a storage.
func (s *Server) diskName(in *storeInst, vmid int, format string) string {
	for i := 0; ; i++ {
		base := fmt.Sprintf("vm-%d-disk-%d", vmid, i)
		bbase := fmt.Sprintf("base-%d-disk-%d", vmid, i)
		taken := false
		for name := range in.vols {
			last := name
			if j := strings.LastIndex(name, "/"); j >= 0 {
				last = name[j+1:]
			}
			last = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(last, ".raw"), ".qcow2"), ".vmdk")
			if last == base || last == bbase {
				taken = true
				break
			}
		}
		if !taken {
			return s.imageName(in, vmid, base, format)
		}
	}
}

// imageName renders a VM image volname for the storage type.
func (s *Server) imageName(in *storeInst, vmid int, name, format string) string {
	if in.cfg.typ == "lvmthin" {
		return name
	}
	return fmt.Sprintf("%d/%s.%s", vmid, name, format)
}

func defaultFormat(in *storeInst) string {
	if in.cfg.typ == "lvmthin" {
		return "raw"
	}
	return "raw"
}

func (s *Server) newPID() (int, int64) {
	s.nextPID += 1 + s.rng.Intn(97)
	n := s.nodes[0]
	pstart := n.pstart + int64(time.Since(s.start)/(10*time.Millisecond))
	return s.nextPID, pstart
}

func (s *Server) randomMAC() string {
	b := make([]byte, 3)
	s.rng.Read(b)
	return fmt.Sprintf("BC:24:11:%02X:%02X:%02X", b[0], b[1], b[2])
}

func (s *Server) randomUUID() string {
	b := make([]byte, 16)
	s.rng.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// vmIDs returns all VM ids sorted.
func (s *Server) vmIDs() []int {
	ids := make([]int, 0, len(s.vms))
	for id := range s.vms {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

// quorate reports whether the cluster has quorum (always for standalone).
func (s *Server) quorate() bool {
	if len(s.nodes) == 1 {
		return true
	}
	online := 0
	for _, n := range s.nodes {
		if n.online {
			online++
		}
	}
	return online*2 > len(s.nodes)
}

func (s *Server) checkQuorum() *apiError {
	if !s.quorate() {
		return errf("cluster not ready - no quorum?")
	}
	return nil
}
