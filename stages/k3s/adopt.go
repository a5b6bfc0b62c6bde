package k3s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/remote"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/stages"
)

// Where the appliance's first boot (`opencsp node bootstrap`) keeps its
// state on the node (cmd/installer/node.go).
const (
	NodeStateDir  = "/var/lib/opencsp/state"
	NodeStateFile = NodeStateDir + "/" + state.FileName
	NodeLog       = NodeStateDir + "/node.log"
)

// nodeStages are the node bootstrap's stages that must be done before the
// installer adopts the node (flux by name: stages/flux is a later stage).
var nodeStages = []string{Name, "flux"}

// adopts reports whether this run adopts what the appliance node did itself
// instead of installing: method appliance, driven over SSH. In local mode
// the node itself is the one installing, whatever its config says.
func (s *Stage) adopts(cfg *config.Config) bool {
	return s.opts.Local == nil && cfg.ManagementVM.Provision.Method == config.ProvisionAppliance
}

// adopt takes over K3s as the appliance's first boot installed it: it waits
// for cloud-init to finish (the node bootstrap runs from its runcmd),
// requires the bootstrap's k3s and flux stages done, and fetches the
// kubeconfig. It uploads, installs and restarts nothing.
func (s *Stage) adopt(ctx context.Context, env *stages.Env, c remote.Executor, t target, out *Outputs) error {
	vm := t.node + " (" + t.where + ")"
	ci, err := s.waitFirstBoot(ctx, env, c, vm)
	if err != nil {
		return err
	}
	done := env.Step("node-state", "read the node bootstrap's state "+NodeStateFile)
	err = checkNodeBootstrap(ctx, c, vm, ci)
	done(err)
	if err != nil {
		return err
	}
	st, err := probe(ctx, c)
	if err != nil {
		return err
	}
	if st.version == "" || !st.active {
		return fmt.Errorf("management VM %s: the node bootstrap reports k3s done, but k3s is not running (version %q, active %v)%s",
			vm, st.version, st.active, journal(ctx, c))
	}
	if want := env.Config.K3s.Version; st.version != want {
		// The node installed the release on its appliance ISO; upgrading
		// it is not this stage's business in appliance mode.
		env.Warn(fmt.Sprintf("k3s on %s is %s (from the appliance ISO), the config asks for %s", vm, st.version, want))
	}
	kc, err := s.waitReady(ctx, env, c, t)
	if err != nil {
		return err
	}
	if err := saveKubeconfig(env, kc); err != nil {
		return err
	}
	out.Version, out.NodeName, out.ConfigDigest = st.version, t.node, ""
	if st.configSHA != "" {
		out.ConfigDigest = "sha256:" + st.configSHA
	}
	out.Kubeconfig, out.Server = kubeconfigPath(env), t.server
	env.Info(fmt.Sprintf("adopted k3s %s installed by the appliance on %s", st.version, vm))
	return env.SetOutputs(out)
}

// firstBootPoll is how often a progress event reports the wait for
// cloud-init (Stage.poll; tests shorten it).
const firstBootPoll = 10 * time.Second

// waitFirstBoot runs `cloud-init status --wait` on the node (bounded by ctx)
// and returns cloud-init's final status line for messages. Its exit code is
// not judged here: the node bootstrap's own state says whether it worked.
func (s *Stage) waitFirstBoot(ctx context.Context, env *stages.Env, c remote.Executor, vm string) (string, error) {
	done := env.Step("first-boot", "wait for the appliance's first boot (cloud-init, node bootstrap) on "+vm)
	type result struct {
		out []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		b, err := c.Output(ctx, "cloud-init status --wait >/dev/null 2>&1; cloud-init status 2>&1 || true")
		res <- result{b, err}
	}()
	start := time.Now()
	tick := time.NewTicker(s.poll)
	defer tick.Stop()
	for {
		select {
		case r := <-res:
			if r.err != nil {
				err := fmt.Errorf("management VM %s: wait for cloud-init (the appliance's first boot): %w", vm, r.err)
				done(err)
				return "", err
			}
			ci := strings.TrimSpace(string(r.out))
			env.Log.Info("cloud-init finished", "status", ci, "waited", time.Since(start).Round(time.Second))
			done(nil)
			return ci, nil
		case <-tick.C:
			env.Events.Emit(events.Event{Step: "first-boot", Status: events.Progress,
				Message: fmt.Sprintf("node bootstrap still running on %s (%s)", vm, time.Since(start).Round(time.Second))})
		}
	}
}

// checkNodeBootstrap reads the node bootstrap's state.json and requires its
// k3s and flux stages done. Otherwise the error names the VM, the node's log
// with its last lines and cloud-init's status ci.
func checkNodeBootstrap(ctx context.Context, c remote.Executor, vm, ci string) error {
	var problem string
	raw, err := c.ReadFile(ctx, NodeStateFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		problem = "the node bootstrap never ran: " + NodeStateFile + " does not exist"
	case err != nil:
		return fmt.Errorf("management VM %s: read the node bootstrap's state: %w", vm, err)
	default:
		var f state.File
		if err := json.Unmarshal(raw, &f); err != nil {
			problem = fmt.Sprintf("%s is not a state file: %v", NodeStateFile, err)
			break
		}
		var bad []string
		for _, name := range nodeStages {
			rec := f.Stages[name]
			switch {
			case rec == nil:
				bad = append(bad, "stage "+name+" never ran")
			case rec.Status != state.Done:
				msg := "stage " + name + " is " + string(rec.Status)
				if rec.Error != "" {
					msg += ": " + rec.Error
				}
				bad = append(bad, msg)
			}
		}
		if len(bad) == 0 {
			return nil
		}
		problem = "the node bootstrap did not finish: " + strings.Join(bad, "; ")
	}
	if ci == "" {
		ci = "unknown"
	}
	return fmt.Errorf("management VM %s (provision method appliance): %s; cloud-init: %s; see %s on the node (`opencsp node bootstrap` logs there)%s",
		vm, problem, ci, NodeLog, nodeLogTail(ctx, c))
}

// nodeLogTail returns the end of the node bootstrap's log for error messages
// (it is written redacted by the node).
func nodeLogTail(ctx context.Context, c remote.Executor) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	b, err := c.Output(ctx, "tail -n 15 "+NodeLog+" 2>&1")
	if err != nil || len(strings.TrimSpace(string(b))) == 0 {
		return "\n(" + NodeLog + " is empty or unreadable)"
	}
	return "\nlast lines of " + NodeLog + ":\n" + strings.TrimSpace(string(b))
}
