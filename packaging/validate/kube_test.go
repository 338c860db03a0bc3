package validate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

const kubeDir = "../../examples/kubernetes"

// decoder decodes manifests into the typed API objects of the kinds the
// examples use, strictly: an unknown or duplicate field, a value of the
// wrong type, or an unknown apiVersion/kind is an error, as with
// 'kubectl apply --validate=strict'.
var decoder = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}()

// decodeManifests decodes every YAML document in src.
func decodeManifests(name string, src []byte) ([]runtime.Object, error) {
	var objs []runtime.Object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(src)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

func stripComments(doc []byte) []byte {
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAll(doc, nil)
}

// kubeObjects decodes every manifest in examples/kubernetes.
func kubeObjects(t *testing.T) map[string][]runtime.Object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", kubeDir, err)
	}
	out := map[string][]runtime.Object{}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeManifests(filepath.Base(f), src)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = objs
	}
	return out
}

// TestKubeManifests decodes every manifest in examples/kubernetes
// strictly, then checks that they fit together and fit handoff.
func TestKubeManifests(t *testing.T) {
	var objs []runtime.Object
	for _, o := range kubeObjects(t) {
		objs = append(objs, o...)
	}
	for _, err := range checkKube(objs, dockerfileUser(t)) {
		t.Error(err)
	}
}

// problems collects what a check found.
type problems []error

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Errorf(format, args...)) }

// checkKube checks that the objects fit together and fit handoff: probes
// on the admin port, the config file where args say, a grace period that
// covers preStop and drain, the image's user.
func checkKube(objs []runtime.Object, user [2]int64) problems {
	var (
		p   problems
		dep *appsv1.Deployment
		cms = map[string]*corev1.ConfigMap{}
		svc *corev1.Service
		pdb *policyv1.PodDisruptionBudget
	)
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			dep = o
		case *corev1.ConfigMap:
			cms[o.Name] = o
		case *corev1.Service:
			svc = o
		case *policyv1.PodDisruptionBudget:
			pdb = o
		default:
			p.add("unexpected %T", o)
		}
	}
	if dep == nil || svc == nil || pdb == nil || len(cms) == 0 {
		p.add("want a Deployment, a Service, a PodDisruptionBudget and a ConfigMap; got %v, %v, %v, %d ConfigMaps", dep != nil, svc != nil, pdb != nil, len(cms))
		return p
	}
	pod := dep.Spec.Template
	if dep.Spec.Selector == nil || len(dep.Spec.Selector.MatchLabels) == 0 {
		p.add("Deployment selector has no matchLabels")
	} else if sel := labels.SelectorFromSet(dep.Spec.Selector.MatchLabels); !sel.Matches(labels.Set(pod.Labels)) {
		p.add("Deployment selector %v does not match its pod labels %v", sel, pod.Labels)
	}
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
		p.add("Service selector %v does not match the pod labels %v", svc.Spec.Selector, pod.Labels)
	}
	if pdb.Spec.Selector == nil || len(pdb.Spec.Selector.MatchLabels) == 0 || !labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels).Matches(labels.Set(pod.Labels)) {
		p.add("PodDisruptionBudget selector does not match the pod labels %v", pod.Labels)
	}
	if s := dep.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable == nil || s.MaxUnavailable.IntValue() != 0 {
		p.add("rollingUpdate.maxUnavailable: want 0, so a rollout never takes capacity away")
	}
	if len(pod.Spec.Containers) != 1 {
		p.add("want one container, got %d", len(pod.Spec.Containers))
		return p
	}
	c := pod.Spec.Containers[0]
	if c.Image == "" || c.Name == "" {
		p.add("container name %q, image %q: both are required", c.Name, c.Image)
	}
	ports := map[string]int32{}
	for _, cp := range c.Ports {
		ports[cp.Name] = cp.ContainerPort
	}
	for _, sp := range svc.Spec.Ports {
		if sp.TargetPort.StrVal != "" && ports[sp.TargetPort.StrVal] == 0 {
			p.add("Service targetPort %q is not a container port (%v)", sp.TargetPort.StrVal, ports)
		}
	}
	checkProbe(&p, "readinessProbe", c.ReadinessProbe, "/readyz", "admin", ports)
	checkProbe(&p, "livenessProbe", c.LivenessProbe, "/healthz", "admin", ports)

	// The config file: args name it, a ConfigMap volume holds it.
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		p.add("args %q: want --config FILE", c.Args)
		return p
	}
	cfgPath := c.Args[i+1]
	var cm *corev1.ConfigMap
	for _, m := range c.VolumeMounts {
		if filepath.Dir(cfgPath) != m.MountPath {
			continue
		}
		if m.SubPath != "" {
			p.add("volumeMount %s uses subPath: the kubelet then never updates the file, and an in-place reload cannot see a ConfigMap edit", m.Name)
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				if cm = cms[v.ConfigMap.Name]; cm == nil {
					p.add("volume %s names ConfigMap %q, which is not among the manifests", v.Name, v.ConfigMap.Name)
					return p
				}
			}
		}
	}
	if cm == nil {
		p.add("--config %s: no ConfigMap volume is mounted at %s", cfgPath, filepath.Dir(cfgPath))
		return p
	}
	key := filepath.Base(cfgPath)
	src, ok := cm.Data[key]
	if !ok {
		p.add("ConfigMap %s has no key %q (the file --config names)", cm.Name, key)
		return p
	}
	cfg, err := parseConfig(cm.Name+"/"+key, []byte(src))
	if err != nil {
		p.add("ConfigMap %s, %s: %v", cm.Name, key, err)
		return p
	}
	checkAddrPort(&p, "admin", cfg.admin, ports["admin"])
	checkAddrPort(&p, `listen "http"`, cfg.listen["http"], ports["http"])

	// The stop arithmetic: preStop, then SIGTERM, then at most
	// drain_timeout, then the master's exit, all inside the grace period.
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		p.add("want a preStop sleep action (the image has no sleep binary)")
		return p
	}
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	const margin = 5 * time.Second
	if pod.Spec.TerminationGracePeriodSeconds == nil {
		p.add("no terminationGracePeriodSeconds: the default (30s) would apply by accident, not by arithmetic")
	} else if grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second; preStop+cfg.drainTimeout+margin > grace {
		p.add("terminationGracePeriodSeconds %v < preStop %v + drain_timeout %v + margin %v", grace, preStop, cfg.drainTimeout, margin)
	}
	if d, err := appDrain(cfg.command); err != nil {
		p.add("%v", err)
	} else if d >= cfg.drainTimeout {
		p.add("hello -drain %v is not below drain_timeout %v: handoff would kill it mid-drain", d, cfg.drainTimeout)
	}

	// The image: its user, a writable /tmp under a read-only root.
	psc := pod.Spec.SecurityContext
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != user[0] || psc.RunAsGroup == nil || *psc.RunAsGroup != user[1] {
		p.add("pod securityContext: want runAsUser %d and runAsGroup %d, the Dockerfile's USER", user[0], user[1])
	}
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		p.add("pod securityContext: want runAsNonRoot: true")
	}
	if sc := c.SecurityContext; sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		writable := false
		for _, m := range c.VolumeMounts {
			writable = writable || (m.MountPath == "/tmp" && !m.ReadOnly)
		}
		if !writable {
			p.add("readOnlyRootFilesystem without a writable /tmp: the master makes its sockets there")
		}
	}
	return p
}

func checkProbe(p *problems, name string, pr *corev1.Probe, path, port string, ports map[string]int32) {
	if pr == nil || pr.HTTPGet == nil {
		p.add("%s: want an httpGet probe on %s", name, path)
		return
	}
	if pr.HTTPGet.Path != path || pr.HTTPGet.Port.String() != port {
		p.add("%s: GET %s on port %s, want %s on %s", name, pr.HTTPGet.Path, pr.HTTPGet.Port.String(), path, port)
	}
	if ports[port] == 0 {
		p.add("%s: port %q is not a container port (%v)", name, port, ports)
	}
}

// checkAddrPort checks that addr (HOST:PORT or URL) listens on port, on
// all addresses (a probe comes from the node, not from localhost).
func checkAddrPort(p *problems, what, addr string, port int32) {
	hostport := addr
	if _, rest, ok := strings.Cut(addr, "://"); ok {
		hostport = rest
	}
	host, portStr, ok := strings.Cut(hostport, ":")
	if !ok || portStr != strconv.Itoa(int(port)) {
		p.add("config %s = %q: want port %d, the container port", what, addr, port)
	}
	if host != "0.0.0.0" && host != "" {
		p.add("config %s = %q: want 0.0.0.0, so that the kubelet's probes and the Service reach it", what, addr)
	}
}

// dockerfileUser reads USER uid:gid from the repository's Dockerfile.
func dockerfileUser(t *testing.T) [2]int64 {
	t.Helper()
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^USER (\d+):(\d+)\s*$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("the Dockerfile has no USER uid:gid line")
	}
	uid, _ := strconv.ParseInt(string(m[1]), 10, 64)
	gid, _ := strconv.ParseInt(string(m[2]), 10, 64)
	return [2]int64{uid, gid}
}

// TestKubeRejects shows that the strict decoding rejects broken copies
// of the real manifests: so a passing TestKubeManifests means the
// manifests are well-formed, not that nothing was checked.
func TestKubeRejects(t *testing.T) {
	dep, err := os.ReadFile(filepath.Join(kubeDir, "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := os.ReadFile(filepath.Join(kubeDir, "service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, src, old, new, want string
	}{
		{"unknown field", "dep", "  minReadySeconds: 5\n", "  minReadySeconds: 5\n  minReadySecond: 5\n", `unknown field "spec.minReadySecond"`},
		{"unknown nested field", "dep", "            periodSeconds: 2\n", "            periodSeconds: 2\n            periodSecond: 2\n", `unknown field "spec.template.spec.containers[0].readinessProbe.periodSecond"`},
		{"misspelt probe action", "dep", "            httpGet:\n              path: /readyz", "            httpGET:\n              path: /readyz", `unknown field`},
		{"wrong type: string for int", "dep", "  replicas: 3\n", "  replicas: \"3\"\n", "replicas"},
		{"wrong type: name for containerPort", "dep", "containerPort: 9100", "containerPort: admin", "containerPort"},
		{"wrong type: list for map", "dep", "  selector:\n    matchLabels:\n      app.kubernetes.io/name: hello\n", "  selector:\n    matchLabels:\n      - app.kubernetes.io/name\n", "matchLabels"},
		{"bad quantity", "dep", "memory: 256Mi", "memory: 256 megabytes", "quantities must match"},
		{"duplicate field", "dep", "  replicas: 3\n", "  replicas: 3\n  replicas: 4\n", "replicas"},
		{"unknown kind", "dep", "kind: Deployment", "kind: Deploymnet", "Deploymnet"},
		{"unknown apiVersion", "dep", "apiVersion: apps/v1", "apiVersion: apps/v2", "apps/v2"},
		{"YAML syntax", "dep", "  replicas: 3\n", "  replicas: [3\n", "yaml"},
		{"second document broken", "svc", "  maxUnavailable: 1\n", "  maxUnavailable: 1\n  maxUnavailabel: 1\n", `document 2`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := map[string][]byte{"dep": dep, "svc": svc}[tc.src]
			if !bytes.Contains(src, []byte(tc.old)) {
				t.Fatalf("the manifest no longer contains %q: update the test", tc.old)
			}
			broken := bytes.Replace(src, []byte(tc.old), []byte(tc.new), 1)
			_, err := decodeManifests(tc.name, broken)
			if err == nil {
				t.Fatalf("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to mention %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}

// TestKubeChecksReject shows checkKube finding what it looks for, on
// broken copies of the real manifests that still decode.
func TestKubeChecksReject(t *testing.T) {
	files := map[string][]byte{}
	for _, f := range []string{"deployment.yaml", "service.yaml", "configmap.yaml"} {
		b, err := os.ReadFile(filepath.Join(kubeDir, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
	}
	user := dockerfileUser(t)
	for _, tc := range []struct {
		name, file, old, new, want string
	}{
		{"grace period too short", "deployment.yaml", "terminationGracePeriodSeconds: 35", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds 30s < preStop 5s + drain_timeout 25s"},
		{"drain too long for the grace period", "configmap.yaml", `drain_timeout = "25s"`, `drain_timeout = "40s"`, "drain_timeout 40s"},
		{"app drain not below handoff's", "configmap.yaml", `"-drain", "20s"`, `"-drain", "25s"`, "hello -drain 25s is not below drain_timeout 25s"},
		{"readiness on healthz", "deployment.yaml", "path: /readyz", "path: /healthz", "readinessProbe: GET /healthz"},
		{"probe on a port not declared", "deployment.yaml", "              port: admin\n            periodSeconds: 10", "              port: metrics\n            periodSeconds: 10", `livenessProbe: GET /healthz on port metrics`},
		{"subPath mount", "deployment.yaml", "              mountPath: /etc/handoff\n", "              mountPath: /etc/handoff\n              subPath: handoff.hcl\n", "subPath"},
		{"config key missing", "configmap.yaml", "  handoff.hcl: |", "  handoff.conf: |", `no key "handoff.hcl"`},
		{"config typo", "configmap.yaml", "min_uptime = ", "min_uptim = ", `"min_uptim" is not expected`},
		{"admin on loopback", "configmap.yaml", `admin = "0.0.0.0:9100"`, `admin = "127.0.0.1:9100"`, "want 0.0.0.0"},
		{"admin on another port", "configmap.yaml", `admin = "0.0.0.0:9100"`, `admin = "0.0.0.0:9200"`, "want port 9100"},
		{"root user", "deployment.yaml", "runAsUser: 65532", "runAsUser: 0", "want runAsUser 65532"},
		{"no writable /tmp", "deployment.yaml", "              mountPath: /tmp\n", "              mountPath: /scratch\n", "without a writable /tmp"},
		{"selector mismatch", "service.yaml", "  selector:\n    app.kubernetes.io/name: hello\n", "  selector:\n    app.kubernetes.io/name: helo\n", "Service selector"},
		{"no preStop", "deployment.yaml", "            preStop:\n              sleep:\n                seconds: 5\n", "", "preStop"},
		{"surge with unavailability", "deployment.yaml", "maxUnavailable: 0", "maxUnavailable: 1", "maxUnavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(files[tc.file], []byte(tc.old)) {
				t.Fatalf("%s no longer contains %q: update the test", tc.file, tc.old)
			}
			var objs []runtime.Object
			for f, src := range files {
				if f == tc.file {
					src = bytes.Replace(src, []byte(tc.old), []byte(tc.new), 1)
				}
				o, err := decodeManifests(f, src)
				if err != nil {
					t.Fatalf("the broken copy must still decode: %v", err)
				}
				objs = append(objs, o...)
			}
			errs := checkKube(objs, user)
			if len(errs) == 0 {
				t.Fatal("no problem found")
			}
			found := false
			for _, err := range errs {
				found = found || strings.Contains(err.Error(), tc.want)
			}
			if !found {
				t.Errorf("problems %q; want one mentioning %q", errs, tc.want)
			}
		})
	}
}
