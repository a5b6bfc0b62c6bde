package pvesim

import (
	"crypto/sha1"
	"encoding/hex"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// handlers maps "METHOD /schema/path" to the implementation.
var handlers map[string]handlerFunc

func init() {
	handlers = map[string]handlerFunc{
		"GET /version":                                               handleVersion,
		"POST /access/ticket":                                        handleTicket,
		"GET /cluster/status":                                        handleClusterStatus,
		"GET /cluster/resources":                                     handleClusterResources,
		"GET /cluster/nextid":                                        handleNextID,
		"GET /nodes":                                                 handleNodes,
		"GET /nodes/{node}/status":                                   handleNodeStatus,
		"GET /nodes/{node}/network":                                  handleNodeNetwork,
		"GET /nodes/{node}/storage":                                  handleStorageList,
		"GET /nodes/{node}/storage/{storage}/status":                 handleStorageStatus,
		"GET /nodes/{node}/storage/{storage}/content":                handleContentList,
		"POST /nodes/{node}/storage/{storage}/content":               handleContentAlloc,
		"GET /nodes/{node}/storage/{storage}/content/{volume}":       handleVolumeInfo,
		"DELETE /nodes/{node}/storage/{storage}/content/{volume}":    handleVolumeDelete,
		"POST /nodes/{node}/storage/{storage}/upload":                handleUpload,
		"POST /nodes/{node}/storage/{storage}/download-url":          handleDownloadURL,
		"GET /nodes/{node}/qemu":                                     handleVMList,
		"POST /nodes/{node}/qemu":                                    handleVMCreate,
		"DELETE /nodes/{node}/qemu/{vmid}":                           handleVMDestroy,
		"GET /nodes/{node}/qemu/{vmid}/config":                       handleVMConfig,
		"POST /nodes/{node}/qemu/{vmid}/config":                      handleVMUpdateAsync,
		"PUT /nodes/{node}/qemu/{vmid}/config":                       handleVMUpdateSync,
		"GET /nodes/{node}/qemu/{vmid}/pending":                      handleVMPending,
		"POST /nodes/{node}/qemu/{vmid}/clone":                       handleVMClone,
		"POST /nodes/{node}/qemu/{vmid}/template":                    handleVMTemplate,
		"PUT /nodes/{node}/qemu/{vmid}/resize":                       handleVMResize,
		"POST /nodes/{node}/qemu/{vmid}/status/start":                handleVMStart,
		"POST /nodes/{node}/qemu/{vmid}/status/stop":                 handleVMStop,
		"POST /nodes/{node}/qemu/{vmid}/status/shutdown":             handleVMShutdown,
		"GET /nodes/{node}/qemu/{vmid}/status/current":               handleVMStatus,
		"POST /nodes/{node}/qemu/{vmid}/agent/ping":                  handleAgentPing,
		"GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces": handleAgentInterfaces,
		"GET /nodes/{node}/qemu/{vmid}/cloudinit":                    handleCloudinitPending,
		"PUT /nodes/{node}/qemu/{vmid}/cloudinit":                    handleCloudinitUpdate,
		"GET /nodes/{node}/qemu/{vmid}/cloudinit/dump":               handleCloudinitDump,
		"GET /nodes/{node}/tasks":                                    handleTaskList,
		"DELETE /nodes/{node}/tasks/{upid}":                          handleTaskStop,
		"GET /nodes/{node}/tasks/{upid}/status":                      handleTaskStatus,
		"GET /nodes/{node}/tasks/{upid}/log":                         handleTaskLog,
	}
}

var releaseRE = regexp.MustCompile(`^(\d+\.\d+)`)

func repoID(version string) string {
	sum := sha1.Sum([]byte("pve-manager " + version))
	return hex.EncodeToString(sum[:8])
}

func handleVersion(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	v := s.nodes[0].version
	s.mu.Unlock()
	release := v
	if m := releaseRE.FindStringSubmatch(v); m != nil {
		release = m[1]
	}
	return map[string]any{"version": v, "release": release, "repoid": repoID(v)}, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func handleClusterStatus(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []any
	if len(s.nodes) > 1 {
		out = append(out, map[string]any{
			"type": "cluster", "id": "cluster", "name": s.opts.ClusterName,
			"nodes": len(s.nodes), "quorate": b2i(s.quorate()), "version": len(s.nodes),
		})
	}
	for i, n := range s.nodes {
		id := n.id
		if len(s.nodes) == 1 {
			id = 0
		}
		out = append(out, map[string]any{
			"type": "node", "id": "node/" + n.name, "name": n.name, "ip": n.ip,
			"local": b2i(i == 0), "nodeid": id, "online": b2i(n.online), "level": "",
		})
	}
	return out, nil
}

// vmMaxMem returns the VM's memory in bytes.
func vmMaxMem(conf map[string]string) int64 {
	mem := int64(512)
	if v := conf["memory"]; v != "" {
		cur := v
		if strings.Contains(v, "=") {
			for _, part := range strings.Split(v, ",") {
				if k, val, ok := strings.Cut(part, "="); ok && k == "current" {
					cur = val
				}
			}
		}
		if n, err := strconv.ParseInt(cur, 10, 64); err == nil {
			mem = n
		}
	}
	return mem << 20
}

func vmCPUs(conf map[string]string) int {
	if v, err := strconv.Atoi(conf["vcpus"]); err == nil && v > 0 {
		return v
	}
	sockets, cores := 1, 1
	if v, err := strconv.Atoi(conf["sockets"]); err == nil && v > 0 {
		sockets = v
	}
	if v, err := strconv.Atoi(conf["cores"]); err == nil && v > 0 {
		cores = v
	}
	return sockets * cores
}

// bootDiskSize returns the size of the first disk of the boot order.
func bootDiskSize(conf map[string]string) int64 {
	order := bootOrder(conf)
	for _, d := range order {
		if !driveNameRE.MatchString(d) {
			continue
		}
		if val, ok := conf[d]; ok && !isCDROM(val) {
			return driveSize(val)
		}
	}
	for _, d := range sortedDriveKeys(conf) {
		if !isCDROM(conf[d]) {
			return driveSize(conf[d])
		}
	}
	return 0
}

func (s *Server) nodeMemUsed(n *node) int64 {
	used := n.memUsed
	for _, v := range s.vms {
		if v.node == n.name && v.running {
			used += vmMaxMem(v.conf)
		}
	}
	return used
}

func (s *Server) uptime(n *node) int64 { return int64(time.Since(n.boot).Seconds()) }

func (s *Server) vmResource(v *vm, nodeOnline bool) map[string]any {
	status := "stopped"
	if v.running {
		status = "running"
	}
	if !nodeOnline {
		status = "unknown"
	}
	res := map[string]any{
		"id": "qemu/" + strconv.Itoa(v.vmid), "type": "qemu", "vmid": v.vmid, "node": v.node,
		"name": v.name(), "status": status, "template": b2i(v.isTemplate()),
		"maxmem": vmMaxMem(v.conf), "maxcpu": vmCPUs(v.conf), "maxdisk": bootDiskSize(v.conf),
		"mem": 0, "cpu": 0, "disk": 0, "uptime": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
	}
	if v.running {
		res["mem"] = vmMaxMem(v.conf) / 4
		res["cpu"] = 0.01
		res["uptime"] = int64(time.Since(v.startedAt).Seconds())
	}
	if t := v.conf["tags"]; t != "" {
		res["tags"] = t
	}
	if l := v.conf["lock"]; l != "" {
		res["lock"] = l
	}
	return res
}

func (s *Server) storageResource(n *node, in *storeInst) map[string]any {
	status := "available"
	if !n.online || !in.active || in.cfg.disabled {
		status = "unknown"
	}
	return map[string]any{
		"id": "storage/" + n.name + "/" + in.cfg.id, "type": "storage", "storage": in.cfg.id,
		"node": n.name, "status": status, "plugintype": in.cfg.typ, "content": contentString(in.cfg.content),
		"shared": b2i(in.cfg.shared), "disk": in.used(), "maxdisk": in.total,
	}
}

func contentString(c map[string]bool) string {
	var l []string
	for k, v := range c {
		if v {
			l = append(l, k)
		}
	}
	sort.Strings(l)
	return strings.Join(l, ",")
}

func handleClusterResources(s *Server, rc *reqCtx) (any, error) {
	typ := rc.str("type")
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []any{}
	if typ == "" || typ == "vm" {
		for _, id := range s.vmIDs() {
			v := s.vms[id]
			n := s.nodeByName(v.node)
			out = append(out, s.vmResource(v, n.online))
		}
	}
	if typ == "" || typ == "node" {
		for _, n := range s.nodes {
			r := map[string]any{"id": "node/" + n.name, "type": "node", "node": n.name, "level": ""}
			if n.online {
				r["status"] = "online"
				r["maxcpu"] = n.cpus
				r["maxmem"] = n.memTotal
				r["mem"] = s.nodeMemUsed(n)
				r["cpu"] = 0.0125
				r["disk"] = int64(3) << 30
				r["maxdisk"] = int64(32) << 30
				r["uptime"] = s.uptime(n)
				r["cgroup-mode"] = 2
			} else {
				r["status"] = "offline"
			}
			out = append(out, r)
		}
	}
	if typ == "" || typ == "storage" {
		for _, n := range s.nodes {
			for _, c := range s.stores {
				if in := s.inst(n.name, c.id); in != nil {
					out = append(out, s.storageResource(n, in))
				}
			}
		}
	}
	if typ == "" || typ == "sdn" {
		for _, n := range s.nodes {
			st := "ok"
			if !n.online {
				st = "unknown"
			}
			out = append(out, map[string]any{"id": "sdn/" + n.name + "/localnetwork", "type": "sdn",
				"sdn": "localnetwork", "node": n.name, "status": st})
		}
	}
	return out, nil
}

// nextFreeID returns the lowest unused VMID >= 100.
func (s *Server) nextFreeID() int {
	for id := 100; ; id++ {
		if _, used := s.vms[id]; !used {
			return id
		}
	}
}

func handleNextID(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rc.has("vmid") {
		id := rc.int("vmid", 0)
		if _, used := s.vms[id]; used {
			return nil, paramErr1("vmid", "VM "+strconv.Itoa(id)+" already exists")
		}
		return strconv.Itoa(id), nil
	}
	f := s.faults
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nextidRace > 0 {
		if f.nextidValue == 0 {
			f.nextidValue = s.nextFreeID()
		}
		f.nextidRace--
		return strconv.Itoa(f.nextidValue), nil
	}
	return strconv.Itoa(s.nextFreeID()), nil
}

func handleNodes(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fp := s.cert.fingerprint()
	out := []any{}
	for _, n := range s.nodes {
		r := map[string]any{"node": n.name, "id": "node/" + n.name, "type": "node", "level": "", "ssl_fingerprint": fp}
		if n.online {
			r["status"] = "online"
			r["cpu"] = 0.0125
			r["maxcpu"] = n.cpus
			r["mem"] = s.nodeMemUsed(n)
			r["maxmem"] = n.memTotal
			r["disk"] = int64(3) << 30
			r["maxdisk"] = int64(32) << 30
			r["uptime"] = s.uptime(n)
		} else {
			r["status"] = "offline"
		}
		out = append(out, r)
	}
	return out, nil
}

func kernelFor(version string) (release, build string) {
	switch {
	case strings.HasPrefix(version, "7."):
		return "5.15.102-1-pve", "#1 SMP PVE 5.15.102-1 (2023-03-14T13:48Z)"
	case strings.HasPrefix(version, "8."):
		return "6.8.12-4-pve", "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-4 (2024-11-06T15:04Z)"
	}
	return "6.17.2-1-pve", "#1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1 (2025-10-21T11:55Z)"
}

func handleNodeStatus(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodeByName(rc.str("node"))
	used := s.nodeMemUsed(n)
	rel, build := kernelFor(n.version)
	rootTotal, rootUsed := int64(32)<<30, int64(3)<<30
	return map[string]any{
		"cpu":  0.0125,
		"wait": 0.0002,
		"idle": 0,
		"cpuinfo": map[string]any{
			"cpus": n.cpus, "cores": n.cpus, "sockets": 1, "model": "Common KVM processor (pvesim)",
			"mhz": "2400.000", "hvm": "1", "user_hz": 100,
			"flags": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx lm rep_good nopl cpuid pni cx16 x2apic hypervisor lahf_lm svm",
		},
		"memory":     map[string]any{"total": n.memTotal, "used": used, "free": n.memTotal - used, "available": n.memTotal - used},
		"swap":       map[string]any{"total": int64(8) << 30, "used": 0, "free": int64(8) << 30},
		"rootfs":     map[string]any{"total": rootTotal, "used": rootUsed, "avail": rootTotal - rootUsed, "free": rootTotal - rootUsed},
		"ksm":        map[string]any{"shared": 0},
		"loadavg":    []string{"0.08", "0.12", "0.10"},
		"uptime":     s.uptime(n),
		"pveversion": "pve-manager/" + n.version + "/" + repoID(n.version),
		"kversion":   "Linux " + rel + " " + build + " x86_64",
		"current-kernel": map[string]any{
			"sysname": "Linux", "release": rel, "version": build, "machine": "x86_64",
		},
		"boot-info": map[string]any{"mode": "efi", "secureboot": 0},
	}, nil
}

// handleNodeNetwork lists the node's interfaces: one NIC and the bridges.
func handleNodeNetwork(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodeByName(rc.str("node"))
	typ := rc.str("type")
	out := []any{}
	if typ == "" || typ == "eth" {
		out = append(out, map[string]any{"iface": "eno1", "type": "eth", "method": "manual", "method6": "manual",
			"families": []string{"inet"}, "active": 1, "exists": 1, "priority": 3})
	}
	if typ == "" || typ == "bridge" || typ == "any_bridge" || typ == "any_local_bridge" {
		for i, b := range n.bridges {
			e := map[string]any{"iface": b, "type": "bridge", "method": "manual", "method6": "manual",
				"families": []string{"inet"}, "active": 1, "autostart": 1, "bridge_stp": "off", "bridge_fd": "0",
				"bridge_ports": "", "priority": 4 + i}
			if i == 0 {
				e["method"] = "static"
				e["bridge_ports"] = "eno1"
				e["address"] = n.ip
				e["netmask"] = "255.255.255.0"
				e["cidr"] = n.ip + "/24"
				e["gateway"] = "192.0.2.1"
			}
			out = append(out, e)
		}
	}
	return out, nil
}
