package pvesim

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var upidRE = regexp.MustCompile(`^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$`)

func (s *Server) findTask(upid string) (*task, *apiError) {
	if !upidRE.MatchString(upid) {
		return nil, paramErr1("upid", "unable to parse worker upid")
	}
	t := s.taskByID[upid]
	if t == nil {
		return nil, paramErr1("upid", "no such task")
	}
	return t, nil
}

func handleTaskStatus(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, aerr := s.findTask(rc.str("upid"))
	if aerr != nil {
		return nil, aerr
	}
	return t.status(), nil
}

func handleTaskLog(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, aerr := s.findTask(rc.str("upid"))
	if aerr != nil {
		return nil, aerr
	}
	if rc.bool("download", false) {
		return nil, errf("Parameter 'download' not supported by pvesim")
	}
	start := rc.int("start", 0)
	limit := rc.int("limit", 50)
	out := []any{}
	for i, l := range t.lines {
		if i < start {
			continue
		}
		if limit > 0 && len(out) >= limit {
			break
		}
		out = append(out, map[string]any{"n": i + 1, "t": l})
	}
	if len(t.lines) == 0 && start == 0 {
		out = append(out, map[string]any{"n": 1, "t": "no content"})
	}
	total := len(t.lines)
	rc.total = &total
	return out, nil
}

func handleTaskStop(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	t, aerr := s.findTask(rc.str("upid"))
	s.mu.Unlock()
	if aerr != nil {
		return nil, aerr
	}
	t.stopOnce.Do(func() { close(t.stop) })
	return nil, nil
}

// statusType mirrors PVE::UPID::normalize_status_type.
func statusType(exit string) string {
	switch {
	case exit == "":
		return "unknown"
	case exit == "OK":
		return "ok"
	case strings.HasPrefix(exit, "WARNINGS: "):
		return "warning"
	case exit == "unexpected status":
		return "unknown"
	}
	return "error"
}

func handleTaskList(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	nodeName := rc.str("node")
	source := rc.str("source")
	if source == "" {
		source = "archive"
	}
	var statusFilter map[string]bool
	if rc.has("statusfilter") {
		statusFilter = map[string]bool{}
		for _, st := range splitList(rc.str("statusfilter")) {
			statusFilter[strings.ToLower(st)] = true
		}
	}
	var list []*task
	for _, t := range s.tasks {
		if t.node != nodeName {
			continue
		}
		if t.running && source == "archive" || !t.running && source == "active" {
			continue
		}
		if rc.bool("errors", false) && (t.running || statusType(t.exit) != "error") {
			continue
		}
		if statusFilter != nil && !t.running && !statusFilter[statusType(t.exit)] {
			continue
		}
		if rc.has("typefilter") && t.typ != rc.str("typefilter") {
			continue
		}
		if rc.has("userfilter") && !strings.Contains(strings.ToLower(t.user), strings.ToLower(rc.str("userfilter"))) {
			continue
		}
		if rc.has("vmid") && t.id != strconv.Itoa(rc.int("vmid", 0)) {
			continue
		}
		if rc.has("since") && t.start.Unix() < int64(rc.int("since", 0)) {
			continue
		}
		if rc.has("until") && t.start.Unix() > int64(rc.int("until", 0)) {
			continue
		}
		list = append(list, t)
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].start.After(list[j].start) })
	total := len(list)
	rc.total = &total
	start, limit := rc.int("start", 0), rc.int("limit", 50)
	out := []any{}
	for i, t := range list {
		if i < start {
			continue
		}
		if limit > 0 && len(out) >= limit {
			break
		}
		e := map[string]any{
			"upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart, "starttime": t.start.Unix(),
			"type": t.typ, "id": t.id, "user": t.user,
		}
		if !t.running {
			e["status"] = t.exit
			e["endtime"] = t.end.Unix()
		}
		out = append(out, e)
	}
	return out, nil
}
