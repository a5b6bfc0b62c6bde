// Package kube is the small Kubernetes client the flux and rollout stages share: decode YAML
// into unstructured objects, server-side apply them with a field manager (CRDs and Namespaces
// first, waiting for CRDs to be established), read, annotate and wait for objects. It uses
// client-go's dynamic client and a discovery-backed REST mapper only.
package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

// FieldManager is the server-side apply field manager of the installer.
const FieldManager = "opencsp"

// Client talks to one cluster.
type Client struct {
	Dynamic dynamic.Interface
	mapper  *restmapper.DeferredDiscoveryRESTMapper
}

// NewFromKubeconfig connects with a kubeconfig file.
func NewFromKubeconfig(path string) (*Client, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return New(cfg)
}

// New connects with a REST config.
func New(cfg *rest.Config) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return &Client{Dynamic: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// Decode splits multi-document YAML (or JSON) into objects, skipping empty documents.
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("decode YAML document %d: %w", len(objs)+1, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("YAML document %d has no apiVersion/kind", len(objs)+1)
		}
		objs = append(objs, u)
	}
}

// ID names an object for messages: Kind/namespace/name.
func ID(u *unstructured.Unstructured) string {
	if u.GetNamespace() == "" {
		return u.GetKind() + "/" + u.GetName()
	}
	return u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName()
}

// Resource returns the dynamic resource interface for a kind (namespaced when ns != "" or the
// kind is namespaced).
func (c *Client) Resource(gvk schema.GroupVersionKind, ns string) (dynamic.ResourceInterface, error) {
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.Dynamic.Resource(m.Resource).Namespace(ns), nil
	}
	return c.Dynamic.Resource(m.Resource), nil
}

// ApplyOptions tune Apply.
type ApplyOptions struct {
	FieldManager string // FieldManager when empty
	DryRun       bool   // dry-run=server
	// Force takes over fields another manager owns (as kubectl apply --force-conflicts).
	Force bool
}

// Applied is what Apply did with one object.
type Applied struct {
	ID      string
	Created bool
	Changed bool // created or updated (resourceVersion moved)
}

// Apply server-side applies objs: CRDs first (then waits until they are established), then
// Namespaces, then the rest in the given order. Objects are never deleted.
func (c *Client) Apply(ctx context.Context, objs []*unstructured.Unstructured, opts ApplyOptions) ([]Applied, error) {
	if opts.FieldManager == "" {
		opts.FieldManager = FieldManager
	}
	ordered := append([]*unstructured.Unstructured(nil), objs...)
	rank := func(u *unstructured.Unstructured) int {
		switch u.GetKind() {
		case "CustomResourceDefinition":
			return 0
		case "Namespace":
			return 1
		}
		return 2
	}
	sort.SliceStable(ordered, func(i, j int) bool { return rank(ordered[i]) < rank(ordered[j]) })
	var out []Applied
	var crds []string
	for i, u := range ordered {
		if i > 0 && rank(ordered[i-1]) == 0 && rank(u) > 0 && !opts.DryRun {
			if err := c.waitCRDs(ctx, crds); err != nil {
				return out, err
			}
		}
		a, err := c.applyOne(ctx, u, opts)
		if err != nil {
			return out, err
		}
		if u.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, u.GetName())
		}
		out = append(out, a)
	}
	if len(ordered) > 0 && rank(ordered[len(ordered)-1]) == 0 && !opts.DryRun {
		if err := c.waitCRDs(ctx, crds); err != nil {
			return out, err
		}
	}
	return out, nil
}

func (c *Client) applyOne(ctx context.Context, u *unstructured.Unstructured, opts ApplyOptions) (Applied, error) {
	a := Applied{ID: ID(u)}
	ri, err := c.Resource(u.GroupVersionKind(), u.GetNamespace())
	if err != nil {
		return a, fmt.Errorf("apply %s: %w", a.ID, err)
	}
	before, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		before = nil
	case err != nil:
		return a, fmt.Errorf("get %s: %w", a.ID, err)
	}
	data, err := u.MarshalJSON()
	if err != nil {
		return a, fmt.Errorf("encode %s: %w", a.ID, err)
	}
	po := metav1.PatchOptions{FieldManager: opts.FieldManager, Force: &opts.Force}
	if before != nil && !opts.DryRun {
		// Skip the write when it would only move field ownership (e.g. fields that
		// kustomize-controller co-owns): reruns leave objects untouched.
		dry := po
		dry.DryRun = []string{metav1.DryRunAll}
		would, err := ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, dry)
		if err != nil {
			return a, fmt.Errorf("apply %s (dry-run): %w", a.ID, err)
		}
		if sameContent(before, would) {
			return a, nil
		}
	}
	if opts.DryRun {
		po.DryRun = []string{metav1.DryRunAll}
	}
	after, err := ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, po)
	if err != nil {
		return a, fmt.Errorf("apply %s: %w", a.ID, err)
	}
	a.Created = before == nil
	a.Changed = before == nil || before.GetResourceVersion() != after.GetResourceVersion()
	return a, nil
}

// sameContent compares two versions of an object ignoring managedFields and server bookkeeping.
func sameContent(a, b *unstructured.Unstructured) bool {
	strip := func(u *unstructured.Unstructured) map[string]any {
		c := u.DeepCopy()
		unstructured.RemoveNestedField(c.Object, "metadata", "managedFields")
		unstructured.RemoveNestedField(c.Object, "metadata", "resourceVersion")
		unstructured.RemoveNestedField(c.Object, "metadata", "generation")
		unstructured.RemoveNestedField(c.Object, "status")
		return c.Object
	}
	return equality.Semantic.DeepEqual(strip(a), strip(b))
}

var crdGVK = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}

func (c *Client) waitCRDs(ctx context.Context, names []string) error {
	for _, n := range names {
		err := c.WaitFor(ctx, crdGVK, "", n, time.Minute, func(u *unstructured.Unstructured) (bool, error) {
			return ConditionStatus(u, "Established") == "True", nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not established: %w", n, err)
		}
	}
	c.mapper.Reset()
	return nil
}

// Get reads an object; (nil, nil) when it does not exist.
func (c *Client) Get(ctx context.Context, gvk schema.GroupVersionKind, ns, name string) (*unstructured.Unstructured, error) {
	ri, err := c.Resource(gvk, ns)
	if err != nil {
		return nil, err
	}
	u, err := ri.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get %s %s/%s: %w", gvk.Kind, ns, name, err)
	}
	return u, nil
}

// Annotate sets one annotation with a merge patch (no field manager ownership of the rest).
func (c *Client) Annotate(ctx context.Context, gvk schema.GroupVersionKind, ns, name, key, value string) error {
	ri, err := c.Resource(gvk, ns)
	if err != nil {
		return err
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, key, value)
	if _, err := ri.Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("annotate %s %s/%s: %w", gvk.Kind, ns, name, err)
	}
	return nil
}

// WaitFor polls an object until done says so, the context ends or timeout passes. A missing
// object counts as not done.
func (c *Client) WaitFor(ctx context.Context, gvk schema.GroupVersionKind, ns, name string, timeout time.Duration,
	done func(*unstructured.Unstructured) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		u, err := c.Get(ctx, gvk, ns, name)
		if err == nil && u != nil {
			ok, derr := done(u)
			if derr != nil {
				return derr
			}
			if ok {
				return nil
			}
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%s %s/%s: %w (last error: %v)", gvk.Kind, ns, name, ctx.Err(), last)
			}
			return fmt.Errorf("%s %s/%s: %w", gvk.Kind, ns, name, ctx.Err())
		case <-tick.C:
		}
	}
}

// Condition is a status condition of an object.
type Condition struct {
	Type, Status, Reason, Message string
	LastTransitionTime            time.Time
	ObservedGeneration            int64
}

// Conditions reads status.conditions.
func Conditions(u *unstructured.Unstructured) []Condition {
	list, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	var out []Condition
	for _, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			continue
		}
		c := Condition{}
		c.Type, _ = m["type"].(string)
		c.Status, _ = m["status"].(string)
		c.Reason, _ = m["reason"].(string)
		c.Message, _ = m["message"].(string)
		if s, ok := m["lastTransitionTime"].(string); ok {
			c.LastTransitionTime, _ = time.Parse(time.RFC3339, s)
		}
		switch g := m["observedGeneration"].(type) {
		case int64:
			c.ObservedGeneration = g
		case float64:
			c.ObservedGeneration = int64(g)
		}
		out = append(out, c)
	}
	return out
}

// FindCondition returns the condition of a type.
func FindCondition(u *unstructured.Unstructured, typ string) (Condition, bool) {
	for _, c := range Conditions(u) {
		if c.Type == typ {
			return c, true
		}
	}
	return Condition{}, false
}

// ConditionStatus is "True", "False", "Unknown" or "" when absent.
func ConditionStatus(u *unstructured.Unstructured, typ string) string {
	c, _ := FindCondition(u, typ)
	return c.Status
}

// FluxReady reports a Flux object's readiness the way kstatus does for Flux kinds: Ready=True
// for the current generation (status.observedGeneration == metadata.generation) and not
// Reconciling/Stalled.
func FluxReady(u *unstructured.Unstructured) bool {
	og, found, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if !found || og != u.GetGeneration() {
		return false
	}
	if ConditionStatus(u, "Stalled") == "True" || ConditionStatus(u, "Reconciling") == "True" {
		return false
	}
	return ConditionStatus(u, "Ready") == "True"
}

// Events returns the recent events of an object (newest last), as "reason: message" lines.
func (c *Client) Events(ctx context.Context, ns, kind, name string, limit int) ([]string, error) {
	ri, err := c.Resource(schema.GroupVersionKind{Version: "v1", Kind: "Event"}, ns)
	if err != nil {
		return nil, err
	}
	list, err := ri.List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name + ",involvedObject.kind=" + kind})
	if err != nil {
		return nil, fmt.Errorf("list events of %s %s/%s: %w", kind, ns, name, err)
	}
	items := list.Items
	ts := func(u unstructured.Unstructured) string {
		for _, f := range [][]string{{"lastTimestamp"}, {"eventTime"}, {"metadata", "creationTimestamp"}} {
			if s, ok, _ := unstructured.NestedString(u.Object, f...); ok && s != "" {
				return s
			}
		}
		return ""
	}
	sort.SliceStable(items, func(i, j int) bool { return ts(items[i]) < ts(items[j]) })
	if len(items) > limit {
		items = items[len(items)-limit:]
	}
	var out []string
	for _, e := range items {
		typ, _, _ := unstructured.NestedString(e.Object, "type")
		reason, _, _ := unstructured.NestedString(e.Object, "reason")
		msg, _, _ := unstructured.NestedString(e.Object, "message")
		out = append(out, fmt.Sprintf("%s %s %s: %s", ts(e), typ, reason, msg))
	}
	return out, nil
}
