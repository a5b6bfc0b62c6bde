package fluxgen

import (
	"fmt"
	"strings"

	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// The root modules of helm-controller and notification-controller are not served, so their
// config/manager is written here from the upstream layout (Deployment "manager" container,
// image fluxcd/<name>, the standard controller args, ports and probes; notification-controller
// also serves events on :9090 and webhooks on :9292 behind two Services).

const deploymentTmpl = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{name}}
  labels:
    control-plane: controller
spec:
  selector:
    matchLabels:
      app: {{name}}
  replicas: 1
  template:
    metadata:
      labels:
        app: {{name}}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "8080"
    spec:
      terminationGracePeriodSeconds: {{grace}}
      containers:
      - name: manager
        image: fluxcd/{{name}}
        imagePullPolicy: IfNotPresent
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          runAsNonRoot: true
          capabilities:
            drop: [ "ALL" ]
          seccompProfile:
            type: RuntimeDefault
        ports:
{{ports}}          - containerPort: 8080
            name: http-prom
            protocol: TCP
          - containerPort: 9440
            name: healthz
            protocol: TCP
        env:
          - name: RUNTIME_NAMESPACE
            valueFrom:
              fieldRef:
                fieldPath: metadata.namespace
        args:
          - --watch-all-namespaces
          - --log-level=info
          - --log-encoding=json
          - --enable-leader-election
        readinessProbe:
          httpGet:
            path: /readyz
            port: healthz
        livenessProbe:
          httpGet:
            path: /healthz
            port: healthz
        resources:
          limits:
            cpu: 1000m
            memory: 1Gi
          requests:
            cpu: 100m
            memory: 64Mi
        volumeMounts:
          - name: temp
            mountPath: /tmp
      volumes:
        - name: temp
          emptyDir: {}
`

const notificationPorts = `          - containerPort: 9090
            name: http
            protocol: TCP
          - containerPort: 9292
            name: http-webhook
            protocol: TCP
`

const notificationServices = `apiVersion: v1
kind: Service
metadata:
  name: notification-controller
  labels:
    control-plane: controller
spec:
  type: ClusterIP
  selector:
    app: notification-controller
  ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: http
---
apiVersion: v1
kind: Service
metadata:
  name: webhook-receiver
  labels:
    control-plane: controller
spec:
  type: ClusterIP
  selector:
    app: notification-controller
  ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: http-webhook
`

const managerKustomization = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
{{resources}}images:
- name: fluxcd/{{name}}
  newName: fluxcd/{{name}}
  newTag: {{version}}
`

func writeManager(fs filesys.FileSystem, dir, name string) error {
	var version, ports, grace string
	resources := "- deployment.yaml\n"
	switch name {
	case "helm-controller":
		version, grace = HelmControllerVersion, "600"
	case "notification-controller":
		version, grace, ports = NotificationControllerVersion, "10", notificationPorts
		resources = "- service.yaml\n- deployment.yaml\n"
		if err := fs.WriteFile(dir+"/service.yaml", []byte(notificationServices)); err != nil {
			return err
		}
	default:
		return fmt.Errorf("no manager template for %s", name)
	}
	r := strings.NewReplacer("{{name}}", name, "{{version}}", version, "{{ports}}", ports,
		"{{grace}}", grace, "{{resources}}", resources)
	if err := fs.WriteFile(dir+"/deployment.yaml", []byte(r.Replace(deploymentTmpl))); err != nil {
		return err
	}
	return fs.WriteFile(dir+"/kustomization.yaml", []byte(r.Replace(managerKustomization)))
}
