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

{{/* env: every LASTEVENT_* setting of .Values.config, sorted by name. */}}
{{- define "lastevent.env" -}}
{{- $env := list }}
{{- range $k, $v := .Values.config }}
{{- if not (hasPrefix "LASTEVENT_" $k) }}
{{- fail (printf "config.%s: only LASTEVENT_* settings belong in config" $k) }}
{{- end }}
{{- $value := toString $v }}
{{- if eq $k "LASTEVENT_UPSTREAM_URL" }}
{{- $value = include "lastevent.upstreamURL" $ }}
{{- end }}
{{- $env = append $env (dict "name" $k "value" $value) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* ports: "lastevent" (clients) and "lastevent-admin", from the listen addresses. */}}
{{- define "lastevent.ports" -}}
- name: lastevent
  containerPort: {{ include "lastevent.listenPort" . }}
  protocol: TCP
- name: lastevent-admin
  containerPort: {{ include "lastevent.adminPort" . }}
  protocol: TCP
{{- end }}

{{/* probes: liveness /healthz and readiness /readyz on the admin port. */}}
{{- define "lastevent.probes" -}}
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
