{{/*
Named templates. Each takes a chart context: in this chart ".", in a parent
chart that has lastevent as a dependency ".Subcharts.lastevent" (its Values
are the parent's .Values.lastevent merged over this chart's defaults):

  containers:
    - name: my-app
      lifecycle:
        {{- include "lastevent.appLifecycle" .Subcharts.lastevent | nindent 8 }}
    {{- include "lastevent.container" .Subcharts.lastevent | nindent 4 }}

Exported: lastevent.container, lastevent.env, lastevent.ports,
lastevent.probes, lastevent.lifecycle, lastevent.appLifecycle,
lastevent.terminationGracePeriodSeconds, lastevent.securityContext,
lastevent.image. Port names: "lastevent" (clients; point your Service here)
and "lastevent-admin" (probes, /metrics).
*/}}

{{- define "lastevent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lastevent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lastevent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lastevent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lastevent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lastevent.labels" -}}
helm.sh/chart: {{ include "lastevent.chart" . }}
{{ include "lastevent.selectorLabels" . }}
app.kubernetes.io/version: {{ include "lastevent.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lastevent.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString }}
{{- end }}

{{- define "lastevent.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "lastevent.tag" .) }}
{{- end }}

{{- define "lastevent.placement" -}}
{{- $p := .Values.placement | default "container" }}
{{- if not (has $p (list "container" "nativeSidecar")) }}
{{- fail (printf "placement %q: want container or nativeSidecar" $p) }}
{{- end }}
{{- $p }}
{{- end }}

{{/* The port of a host:port or :port address, e.g. ":8080" -> 8080. */}}
{{- define "lastevent.portOf" -}}
{{- $addr := toString . | trim }}
{{- $port := regexFind ":[0-9]+$" $addr | trimPrefix ":" }}
{{- if or (not $port) (lt (atoi $port) 1) (gt (atoi $port) 65535) }}
{{- fail (printf "address %q: want host:port or :port with a port from 1 to 65535" $addr) }}
{{- end }}
{{- $host := trimSuffix (printf ":%s" $port) $addr | trimPrefix "[" | trimSuffix "]" }}
{{- if or (eq $host "localhost") (hasPrefix "127." $host) (eq $host "::1") }}
{{- fail (printf "address %q listens on loopback only: the kubelet's probes, Services and Prometheus reach the pod IP (use :%s)" $addr $port) }}
{{- end }}
{{- atoi $port }}
{{- end }}

{{- define "lastevent.listenPort" -}}
{{- include "lastevent.portOf" .Values.config.LASTEVENT_LISTEN_ADDR }}
{{- end }}

{{- define "lastevent.adminPort" -}}
{{- include "lastevent.portOf" .Values.config.LASTEVENT_ADMIN_ADDR }}
{{- end }}

{{/* A Go duration ("10s", "1m30s", "500ms", "0") in whole seconds, rounded up. */}}
{{- define "lastevent.durationSeconds" -}}
{{- $d := toString . | trim }}
{{- $part := "[0-9]+(\\.[0-9]+)?(h|ms|m|s|us|µs|ns)" }}
{{- if eq $d "0" }}0
{{- else if not (regexMatch (printf "^(%s)+$" $part) $d) }}
{{- fail (printf "duration %q: want a Go duration such as 10s or 1m30s" $d) }}
{{- else }}
{{- $units := dict "h" 3600.0 "m" 60.0 "s" 1.0 "ms" 0.001 "us" 0.000001 "µs" 0.000001 "ns" 0.000000001 }}
{{- $total := 0.0 }}
{{- range $p := regexFindAll $part $d -1 }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $p }}
{{- $total = addf $total (mulf (float64 $num) (get $units (trimPrefix $num $p))) }}
{{- end }}
{{- ceil $total | int }}
{{- end }}
{{- end }}

{{- define "lastevent.upstreamURL" -}}
{{- .Values.config.LASTEVENT_UPSTREAM_URL | default (printf "http://127.0.0.1:%v" .Values.upstreamPort) }}
{{- end }}

{{/*
The settings the chart renders from store and redis.* instead of config:
a password must come from a Secret, the node id from the pod name.
LASTEVENT_CLOCK_OFFSET (a testing aid that skews the id clock) is not set.
*/}}
{{- define "lastevent.storeSettings" -}}
{{- toJson (list "LASTEVENT_STORE" "LASTEVENT_REDIS_URL" "LASTEVENT_REDIS_PASSWORD" "LASTEVENT_REDIS_CLUSTER" "LASTEVENT_NODE_ID" "LASTEVENT_REDIS_LEASE" "LASTEVENT_REDIS_TIMEOUT" "LASTEVENT_REDIS_RETENTION" "LASTEVENT_CLOCK_OFFSET") }}
{{- end }}

{{/* A {name, key} Secret reference from values; fails when half of it is set. */}}
{{- define "lastevent.secretKeyRef" -}}
{{- $what := index . 0 }}
{{- $ref := index . 1 | default dict }}
{{- $name := $ref.name | default "" | toString | trim }}
{{- $key := $ref.key | default "" | toString | trim }}
{{- if and $name (not $key) }}
{{- fail (printf "%s.name is %q but %s.key is empty: name the Secret's key" $what $name $what) }}
{{- end }}
{{- if $name }}
{{- toJson (dict "secretKeyRef" (dict "name" $name "key" $key)) }}
{{- end }}
{{- end }}

{{/* The store settings as env entries (a name -> entry dict, as JSON). */}}
{{- define "lastevent.storeEnv" -}}
{{- $store := .Values.store | default "memory" | toString }}
{{- if not (has $store (list "memory" "redis")) }}
{{- fail (printf "store %q: want memory or redis" $store) }}
{{- end }}
{{- $env := dict "LASTEVENT_STORE" (dict "name" "LASTEVENT_STORE" "value" $store) }}
{{- if eq $store "redis" }}
{{- $r := .Values.redis | default dict }}
{{- $url := $r.url | default "" | toString | trim }}
{{- $urlRef := include "lastevent.secretKeyRef" (list "redis.urlSecret" $r.urlSecret) }}
{{- if and $url $urlRef }}
{{- fail "store=redis: set redis.url or redis.urlSecret.name, not both" }}
{{- else if $url }}
{{- if not (regexMatch "^rediss?://" $url) }}
{{- fail (printf "redis.url %q: want redis://host:port or rediss://host:port" $url) }}
{{- end }}
{{- if regexMatch "^rediss?://[^/@?#]*:[^/@?#]*@" $url }}
{{- fail "redis.url carries a password, which would stand in plain text in the pod spec: take it out of the URL and set redis.passwordSecret (an existing Secret), or put the whole URL in a Secret (redis.urlSecret)" }}
{{- end }}
{{- $_ := set $env "LASTEVENT_REDIS_URL" (dict "name" "LASTEVENT_REDIS_URL" "value" $url) }}
{{- else if $urlRef }}
{{- $_ := set $env "LASTEVENT_REDIS_URL" (dict "name" "LASTEVENT_REDIS_URL" "valueFrom" (fromJson $urlRef)) }}
{{- else }}
{{- fail "store=redis needs the address of an existing Redis: set redis.url (e.g. redis://redis-master.redis.svc:6379) or redis.urlSecret.name and redis.urlSecret.key (a Secret holding the URL)" }}
{{- end }}
{{- with include "lastevent.secretKeyRef" (list "redis.passwordSecret" $r.passwordSecret) }}
{{- $_ := set $env "LASTEVENT_REDIS_PASSWORD" (dict "name" "LASTEVENT_REDIS_PASSWORD" "valueFrom" (fromJson .)) }}
{{- end }}
{{- if not (kindIs "bool" $r.cluster) }}
{{- fail (printf "redis.cluster %v: want true or false" $r.cluster) }}
{{- end }}
{{- $_ := set $env "LASTEVENT_REDIS_CLUSTER" (dict "name" "LASTEVENT_REDIS_CLUSTER" "value" (toString $r.cluster)) }}
{{- range $field, $name := dict "lease" "LASTEVENT_REDIS_LEASE" "timeout" "LASTEVENT_REDIS_TIMEOUT" "retention" "LASTEVENT_REDIS_RETENTION" }}
{{- $d := index $r $field | default "" | toString | trim }}
{{- if or (not (regexMatch "^([0-9]+(\\.[0-9]+)?(h|ms|m|s|us|µs|ns))+$" $d)) (not (regexMatch "[1-9]" $d)) }}
{{- fail (printf "redis.%s %q: want a positive Go duration such as 6s, 500ms or 1h" $field $d) }}
{{- end }}
{{- $_ := set $env $name (dict "name" $name "value" $d) }}
{{- end }}
{{- /* Names lease holders: unique per pod, and the hostname default would be the same. */}}
{{- $_ := set $env "LASTEVENT_NODE_ID" (dict "name" "LASTEVENT_NODE_ID" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.name"))) }}
{{- end }}
{{- toJson $env }}
{{- end }}

{{/*
env: every LASTEVENT_* setting of .Values.config, plus the store settings
(from store and redis.*), sorted by name.
*/}}
{{- define "lastevent.env" -}}
{{- $managed := include "lastevent.storeSettings" . | fromJsonArray }}
{{- $env := include "lastevent.storeEnv" . | fromJson }}
{{- range $k, $v := .Values.config }}
{{- if not (hasPrefix "LASTEVENT_" $k) }}
{{- fail (printf "config.%s: only LASTEVENT_* settings belong in config" $k) }}
{{- end }}
{{- if eq $k "LASTEVENT_CLOCK_OFFSET" }}
{{- fail "config.LASTEVENT_CLOCK_OFFSET: a testing aid (it skews the clock of ids), not settable through the chart" }}
{{- else if has $k $managed }}
{{- fail (printf "config.%s: set it through store and redis.* (url, urlSecret, passwordSecret, cluster, lease, timeout, retention), not config; a password only ever comes from a Secret" $k) }}
{{- end }}
{{- $value := toString $v }}
{{- if eq $k "LASTEVENT_UPSTREAM_URL" }}
{{- $value = include "lastevent.upstreamURL" $ }}
{{- end }}
{{- $_ := set $env $k (dict "name" $k "value" $value) }}
{{- end }}
{{- $list := list }}
{{- range $k := keys $env | sortAlpha }}
{{- $list = append $list (get $env $k) }}
{{- end }}
{{- toYaml $list }}
{{- end }}

{{/* ports: "lastevent" (clients) and "lastevent-admin", from the listen addresses. */}}
{{- define "lastevent.ports" -}}
{{- $listen := include "lastevent.listenPort" . | int }}
{{- $admin := include "lastevent.adminPort" . | int }}
{{- if eq $listen $admin }}
{{- fail (printf "LASTEVENT_LISTEN_ADDR and LASTEVENT_ADMIN_ADDR both use port %d" $listen) }}
{{- end }}
{{- if and (not .Values.config.LASTEVENT_UPSTREAM_URL) (has (int .Values.upstreamPort) (list $listen $admin)) }}
{{- fail (printf "upstreamPort %v is also lastevent's port (LASTEVENT_LISTEN_ADDR %q, LASTEVENT_ADMIN_ADDR %q): the app and lastevent share the pod's network, so one of them could not listen; move lastevent's ports (e.g. config.LASTEVENT_LISTEN_ADDR=\":8090\")" .Values.upstreamPort .Values.config.LASTEVENT_LISTEN_ADDR .Values.config.LASTEVENT_ADMIN_ADDR) }}
{{- end }}
{{- with .Values.config.LASTEVENT_UPSTREAM_URL }}
{{- $u := urlParse . }}
{{- $host := $u.host }}
{{- $port := ternary "443" "80" (eq $u.scheme "https") }}
{{- if regexMatch ":[0-9]+$" $host }}
{{- $port = regexFind "[0-9]+$" $host }}
{{- $host = regexReplaceAll ":[0-9]+$" $host "" }}
{{- end }}
{{- if and (has $host (list "127.0.0.1" "localhost" "[::1]")) (has (int $port) (list $listen $admin)) }}
{{- fail (printf "LASTEVENT_UPSTREAM_URL %q is lastevent's own port in the pod (LASTEVENT_LISTEN_ADDR %q, LASTEVENT_ADMIN_ADDR %q): lastevent would proxy to itself; point it at the app's port" . $.Values.config.LASTEVENT_LISTEN_ADDR $.Values.config.LASTEVENT_ADMIN_ADDR) }}
{{- end }}
{{- end }}
- name: lastevent
  containerPort: {{ include "lastevent.listenPort" . }}
  protocol: TCP
- name: lastevent-admin
  containerPort: {{ include "lastevent.adminPort" . }}
  protocol: TCP
{{- end }}

{{/*
probes: liveness /healthz and readiness /readyz on the admin port; a native
sidecar also gets a startupProbe on /healthz, which Kubernetes waits for
before it starts the app.
*/}}
{{- define "lastevent.probes" -}}
{{- if eq (include "lastevent.placement" .) "nativeSidecar" }}
startupProbe:
  httpGet:
    path: /healthz
    port: lastevent-admin
  {{- toYaml .Values.probes.startup | nindent 2 }}
{{- end }}
livenessProbe:
  httpGet:
    path: /healthz
    port: lastevent-admin
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: lastevent-admin
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end }}

{{/*
lastevent's own lifecycle: a preStop sleep so that it keeps serving while the
pod leaves the endpoints, then SIGTERM drains. None for a native sidecar: it
is stopped after the app, when waiting only delays the drain.
*/}}
{{- define "lastevent.lifecycle" -}}
{{- $sleep := int .Values.lifecycle.preStopSleepSeconds }}
{{- if and (eq (include "lastevent.placement" .) "container") (gt $sleep 0) }}
{{- toYaml (dict "preStop" (dict "sleep" (dict "seconds" $sleep))) }}
{{- end }}
{{- end }}

{{/*
The app container's lifecycle: the upstream must outlive lastevent's drain.
Beside lastevent (placement container) its preStop sleeps through lastevent's
preStop and shutdown grace; with lastevent as a native sidecar (stopped after
the app) it carries the endpoint-propagation sleep itself.
*/}}
{{- define "lastevent.appLifecycle" -}}
{{- $sleep := int .Values.lifecycle.preStopSleepSeconds }}
{{- if eq (include "lastevent.placement" .) "container" }}
{{- $sleep = add $sleep (include "lastevent.durationSeconds" .Values.config.LASTEVENT_SHUTDOWN_GRACE) 1 }}
{{- end }}
{{- if gt $sleep 0 }}
{{- toYaml (dict "preStop" (dict "sleep" (dict "seconds" $sleep))) }}
{{- end }}
{{- end }}

{{/* The pod's grace period, sized for preStop + drain (+ the app's own shutdown). */}}
{{- define "lastevent.terminationGracePeriodSeconds" -}}
{{- $sleep := int .Values.lifecycle.preStopSleepSeconds }}
{{- $grace := include "lastevent.durationSeconds" .Values.config.LASTEVENT_SHUTDOWN_GRACE | int }}
{{- $min := add $sleep $grace 1 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $sleep $grace (int .Values.lifecycle.extraGraceSeconds) }}
{{- else if lt (int .Values.terminationGracePeriodSeconds) $min }}
{{- fail (printf "terminationGracePeriodSeconds %v is too short: lastevent needs preStop %ds + LASTEVENT_SHUTDOWN_GRACE %ds + 1" .Values.terminationGracePeriodSeconds $sleep $grace) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{- define "lastevent.securityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/*
The lastevent container, as one list item: put it under containers
(placement container) or initContainers (placement nativeSidecar, which
adds restartPolicy: Always).
*/}}
{{- define "lastevent.container" -}}
- name: lastevent
  image: {{ include "lastevent.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if eq (include "lastevent.placement" .) "nativeSidecar" }}
  restartPolicy: Always
  {{- end }}
  ports:
    {{- include "lastevent.ports" . | nindent 4 }}
  env:
    {{- include "lastevent.env" . | nindent 4 }}
  {{- include "lastevent.probes" . | nindent 2 }}
  {{- with include "lastevent.lifecycle" . }}
  lifecycle:
    {{- . | nindent 4 }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "lastevent.securityContext" . | nindent 4 }}
  terminationMessagePolicy: FallbackToLogsOnError
{{- end }}
