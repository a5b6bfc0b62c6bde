package infra

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// NoNodeFitsError says why no node can host a VM, node by node.
type NoNodeFitsError struct {
	Want    string            // what was asked, e.g. "4 cores, 16384 MiB"
	Reasons map[string]string // node -> why it was ruled out
}

func (e *NoNodeFitsError) Error() string {
	names := make([]string, 0, len(e.Reasons))
	for n := range e.Reasons {
		names = append(names, n)
	}
	sort.Strings(names)
	lines := make([]string, len(names))
	for i, n := range names {
		lines[i] = fmt.Sprintf("  - %s: %s", n, e.Reasons[n])
	}
	return fmt.Sprintf("no node can host the VM (%s):\n%s", e.Want, strings.Join(lines, "\n"))
}

// PlacementRequest is what a VM needs from a node.
type PlacementRequest struct {
	Allowed   []string // empty: all nodes
	Pinned    string   // a fixed node, if set
	Cores     int
	MemoryMiB int
	Storage   string // disk storage that must be active on the node
	Bridge    string
}

// Place picks the node for a VM: the pinned one if set (and usable), else
// the allowed online node with the most free memory, then the least busy
// CPU, then the name for a stable choice.
func Place(nodes []Node, req PlacementRequest) (Node, error) {
	reasons := map[string]string{}
	var fits []Node
	for _, n := range nodes {
		if req.Pinned != "" && n.Name != req.Pinned {
			continue
		}
		if req.Pinned == "" && len(req.Allowed) > 0 && !slices.Contains(req.Allowed, n.Name) {
			continue
		}
		if why := unfit(n, req); why != "" {
			reasons[n.Name] = why
			continue
		}
		fits = append(fits, n)
	}
	want := fmt.Sprintf("%d cores, %d MiB memory, storage %s, bridge %s", req.Cores, req.MemoryMiB, req.Storage, req.Bridge)
	if len(fits) == 0 {
		if len(reasons) == 0 {
			what := "no allowed node exists"
			if req.Pinned != "" {
				what = "the pinned node does not exist"
				reasons[req.Pinned] = what
			} else {
				reasons["(none)"] = what
			}
		}
		return Node{}, &NoNodeFitsError{Want: want, Reasons: reasons}
	}
	sort.SliceStable(fits, func(i, j int) bool {
		a, b := fits[i], fits[j]
		if a.MemFree() != b.MemFree() {
			return a.MemFree() > b.MemFree()
		}
		if fa, fb := float64(a.CPUs)*(1-a.CPUUsed), float64(b.CPUs)*(1-b.CPUUsed); fa != fb {
			return fa > fb
		}
		return a.Name < b.Name
	})
	return fits[0], nil
}

func unfit(n Node, req PlacementRequest) string {
	switch {
	case !n.Online:
		return "offline"
	case n.CPUs < req.Cores:
		return fmt.Sprintf("has %d CPUs, the VM needs %d cores", n.CPUs, req.Cores)
	case n.MemFree() < int64(req.MemoryMiB)<<20:
		return fmt.Sprintf("%d MiB memory free, the VM needs %d MiB", n.MemFree()>>20, req.MemoryMiB)
	case req.Bridge != "" && n.Bridges != nil && !slices.Contains(n.Bridges, req.Bridge):
		return fmt.Sprintf("has no bridge %s", req.Bridge)
	}
	if req.Storage != "" {
		i := slices.IndexFunc(n.Storages, func(s Storage) bool { return s.Name == req.Storage })
		switch {
		case i < 0:
			return fmt.Sprintf("has no storage %s", req.Storage)
		case !n.Storages[i].Active || !n.Storages[i].Enabled:
			return fmt.Sprintf("storage %s is not active", req.Storage)
		}
	}
	return ""
}
