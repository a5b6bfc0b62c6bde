package proxmox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/infra"
)

// EnsureTemplate makes sure spec.Name exists as a template on spec.Node.
// Every step is found again before it is done: the image file on import
// storage, the VM created from it (a VM from an interrupted run that is
// not yet a template is completed), the conversion. Tasks an earlier run
// left in flight are waited on first.
func (p *Provider) EnsureTemplate(ctx context.Context, spec infra.TemplateSpec, tasks infra.Tasks, sink events.Sink) (infra.Template, error) {
	if sink == nil {
		sink = events.Discard()
	}
	at := spec.Name + "@" + spec.Node
	volid := spec.Import + ":import/" + spec.Image.FileName
	kinds := []string{"image " + volid + "@" + spec.Node, "create " + at, "template " + at}
	for _, k := range kinds {
		if err := p.reattach(ctx, tasks, k); err != nil {
			return infra.Template{}, err
		}
	}

	var tmpl infra.Template
	err := p.retry(ctx, "ensure template "+at, func() error {
		rs, err := p.findByName(ctx, spec.Name, spec.Tag, spec.Node)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if bool(r.Template) {
				tmpl = infra.Template{ID: r.VMID, Node: r.Node, Name: r.Name}
				return nil
			}
		}
		vmid := 0
		if len(rs) > 0 {
			// Created by an earlier run but not converted yet: complete it.
			vmid = rs[0].VMID
			if err := p.waitUnlocked(ctx, spec.Node, vmid); err != nil {
				return err
			}
		} else {
			if err := p.ensureImage(ctx, spec, volid, tasks, kinds[0], sink); err != nil {
				return err
			}
			if vmid, err = p.createTemplateVM(ctx, spec, volid, tasks, kinds[1]); err != nil {
				return err
			}
		}
		sink.Emit(events.Event{Step: "template", Status: events.Info, Message: fmt.Sprintf("convert VM %d on %s to template %s", vmid, spec.Node, spec.Name)})
		err = p.runTask(ctx, tasks, kinds[2], func() (string, error) {
			var upid *string
			if err := p.api.post(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/template", spec.Node, vmid), nil, &upid); err != nil {
				return "", fmt.Errorf("convert VM %d on %s to a template: %w", vmid, spec.Node, err)
			}
			if upid == nil || *upid == "" {
				return "", nil
			}
			return *upid, nil
		})
		if err != nil {
			return err
		}
		tmpl = infra.Template{ID: vmid, Node: spec.Node, Name: spec.Name}
		return nil
	})
	return tmpl, err
}

// ensureImage puts the image file on import storage unless it is there:
// the node downloads it (download-url, checksum verified by PVE) or, for a
// local file, the installer uploads it.
func (p *Provider) ensureImage(ctx context.Context, spec infra.TemplateSpec, volid string, tasks infra.Tasks, kind string, sink events.Sink) error {
	var content []struct {
		VolID string `json:"volid"`
	}
	path := fmt.Sprintf("/nodes/%s/storage/%s/content", spec.Node, spec.Import)
	if err := p.api.get(ctx, path, map[string]string{"content": "import"}, &content); err != nil {
		return fmt.Errorf("list import content of %s on %s: %w", spec.Import, spec.Node, err)
	}
	for _, c := range content {
		if c.VolID == volid {
			return nil
		}
	}
	img := spec.Image
	if img.LocalPath != "" {
		sink.Emit(events.Event{Step: "upload", Status: events.Started, Message: fmt.Sprintf("upload %s to %s on %s", img.FileName, spec.Import, spec.Node)})
		f := uploadFile{Content: "import", LocalPath: img.LocalPath, FileName: img.FileName, Checksum: img.Checksum, ChecksumAlgorithm: img.ChecksumAlgorithm}
		err := p.runTask(ctx, tasks, kind, func() (string, error) { return p.upload(ctx, spec.Node, spec.Import, f, sink) })
		if err != nil {
			return fmt.Errorf("upload %s to %s on %s: %w", img.FileName, spec.Import, spec.Node, err)
		}
		sink.Emit(events.Event{Step: "upload", Status: events.Done})
		return nil
	}
	params := map[string]any{"content": "import", "filename": img.FileName, "url": img.URL}
	if img.Checksum != "" {
		params["checksum"] = img.Checksum
		params["checksum-algorithm"] = img.ChecksumAlgorithm
	}
	sink.Emit(events.Event{Step: "download", Status: events.Started, Message: fmt.Sprintf("node %s downloads %s to %s", spec.Node, img.URL, volid)})
	err := p.runTask(ctx, tasks, kind, func() (string, error) {
		var upid string
		err := p.api.post(ctx, path[:len(path)-len("/content")]+"/download-url", params, &upid)
		return upid, err
	})
	if err != nil {
		return fmt.Errorf("node %s downloads %s: %w", spec.Node, img.URL, err)
	}
	sink.Emit(events.Event{Step: "download", Status: events.Done})
	return nil
}

// createTemplateVM creates the VM that becomes the template, importing the
// image as its disk. VMIDs from /cluster/nextid can race with other
// clients: "already exists" is retried with a fresh id.
func (p *Provider) createTemplateVM(ctx context.Context, spec infra.TemplateSpec, volid string, tasks infra.Tasks, kind string) (int, error) {
	net := "virtio,bridge=" + spec.Bridge
	if spec.VLAN > 0 {
		net += ",tag=" + strconv.Itoa(spec.VLAN)
	}
	for attempt := 1; ; attempt++ {
		vmid, err := p.nextID(ctx)
		if err != nil {
			return 0, err
		}
		params := map[string]any{
			"vmid":    vmid,
			"name":    spec.Name,
			"tags":    spec.Tag,
			"ostype":  "l26",
			"scsihw":  "virtio-scsi-single",
			"scsi0":   spec.Storage + ":0,import-from=" + volid,
			"ide2":    spec.Storage + ":cloudinit",
			"serial0": "socket",
			"vga":     "serial0",
			"agent":   "enabled=1",
			"boot":    "order=scsi0",
			"net0":    net,
		}
		err = p.runTask(ctx, tasks, kind, func() (string, error) {
			var upid string
			err := p.api.post(ctx, "/nodes/"+spec.Node+"/qemu", params, &upid)
			return upid, err
		})
		if err == nil {
			return vmid, nil
		}
		if isAlreadyExists(err) && attempt < p.opts.Attempts && ctx.Err() == nil {
			p.log.Warn("VMID taken meanwhile, retrying with a fresh one", "vmid", vmid, "err", err)
			continue
		}
		return 0, fmt.Errorf("create VM %d (%s) on %s: %w", vmid, spec.Name, spec.Node, err)
	}
}

// waitUnlocked waits until a VM has no config lock (a create or clone of
// an earlier run still working on it).
func (p *Provider) waitUnlocked(ctx context.Context, node string, vmid int) error {
	var delay time.Duration
	deadline := time.Now().Add(30 * time.Minute)
	for {
		var st struct {
			Lock string `json:"lock"`
		}
		if err := p.api.get(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/status/current", node, vmid), nil, &st); err != nil {
			return fmt.Errorf("status of VM %d on %s: %w", vmid, node, err)
		}
		if st.Lock == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("VM %d on %s is still locked (%s); a task of an earlier run may be stuck: check the node's task log", vmid, node, st.Lock)
		}
		p.log.Info("waiting for VM lock", "vmid", vmid, "lock", st.Lock)
		delay = p.opts.Poll.next(delay)
		if err := sleep(ctx, delay); err != nil {
			return err
		}
	}
}

// uploadFile is a local file for the storage upload call.
type uploadFile struct {
	Content           string // import, iso
	LocalPath         string
	FileName          string
	Checksum          string
	ChecksumAlgorithm string
}

// upload streams a local file to storage as multipart/form-data: never
// held in memory, progress reported in bytes. It returns the task's UPID.
func (p *Provider) upload(ctx context.Context, node, storage string, img uploadFile, sink events.Sink) (string, error) {
	f, err := os.Open(img.LocalPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	var head bytes.Buffer
	mw := multipart.NewWriter(&head)
	fields := map[string]string{"content": img.Content}
	if img.Checksum != "" {
		fields["checksum"] = img.Checksum
		fields["checksum-algorithm"] = img.ChecksumAlgorithm
	}
	for _, k := range []string{"content", "checksum", "checksum-algorithm"} {
		if v, ok := fields[k]; ok {
			if err := mw.WriteField(k, v); err != nil {
				return "", err
			}
		}
	}
	if _, err := mw.CreateFormFile("filename", img.FileName); err != nil {
		return "", err
	}
	headLen := head.Len()
	if err := mw.Close(); err != nil {
		return "", err
	}
	all := head.Bytes()
	body := io.MultiReader(bytes.NewReader(all[:headLen]),
		&progressReader{r: f, total: st.Size(), sink: sink, every: 250 * time.Millisecond},
		bytes.NewReader(all[headLen:]))
	url := fmt.Sprintf("%s/nodes/%s/storage/%s/upload", p.api.base, node, storage)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		return "", err
	}
	req.ContentLength = int64(len(all)) + st.Size()
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", p.api.auth)
	res, err := p.uploadHTTP.Do(req)
	if err != nil {
		return "", wrap("POST", "/nodes/"+node+"/storage/"+storage+"/upload", err)
	}
	defer res.Body.Close()
	var doc struct {
		Data string `json:"data"`
	}
	if err := decodeJSON(res.Body, &doc); err != nil {
		return "", fmt.Errorf("upload answer: %w", err)
	}
	return doc.Data, nil
}

// progressReader emits throttled progress events while a body is read.
type progressReader struct {
	r     io.Reader
	total int64
	done  atomic.Int64
	sink  events.Sink
	every time.Duration
	last  time.Time
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	done := pr.done.Add(int64(n))
	if now := time.Now(); err != nil || now.Sub(pr.last) >= pr.every || done == pr.total {
		pr.last = now
		pr.sink.Emit(events.Event{Step: "upload", Status: events.Progress, BytesDone: done, BytesTotal: pr.total})
	}
	return n, err
}

func decodeJSON(r io.Reader, v any) error {
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return err
	}
	return jsonUnmarshal(b, v)
}
