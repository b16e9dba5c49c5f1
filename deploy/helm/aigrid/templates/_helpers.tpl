{{/*
The chart renders the manifests of deploy/k8s (files/ links to them) with what their Kustomize overlays
do, so that both give the same resources (tests/deploy/test_helm.py compares them): load the files a
choice of values needs, drop and patch what the overlays' components drop and patch, then set the
namespace, the labels and the release image.
*/}}

{{/* The objects of one manifest file, as {"items": [...]} YAML (a template returns text only). */}}
{{- define "aigrid.docs" -}}
{{- $items := list -}}
{{- range $doc := splitList "\n---\n" ((index . 0).Files.Get (index . 1)) -}}
{{- $o := fromYaml $doc -}}
{{- if and $o (hasKey $o "kind") -}}
{{- $items = append $items $o -}}
{{- end -}}
{{- end -}}
{{- toYaml (dict "items" $items) -}}
{{- end -}}

{{/* The files a Kustomize component or kustomization lists under `resources`, as paths under files/. */}}
{{- define "aigrid.resources" -}}
{{- $root := index . 0 -}}{{- $dir := index . 1 -}}
{{- $k := $root.Files.Get (printf "%s/kustomization.yaml" $dir) | fromYaml -}}
{{- $paths := list -}}
{{- range $r := $k.resources -}}
{{- $paths = append $paths (printf "%s/%s" $dir $r) -}}
{{- end -}}
{{- toYaml (dict "items" $paths) -}}
{{- end -}}

{{/* The release image for the containers the manifests name `aigrid`. */}}
{{- define "aigrid.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* One object out: namespace, labels (part-of only on the base's, as its `labels:` reaches), image. */}}
{{- define "aigrid.emit" -}}
{{- $root := index . 0 -}}{{- $o := index . 1 -}}{{- $fromBase := index . 2 -}}
{{- $md := $o.metadata -}}
{{- if ne $o.kind "Namespace" -}}{{- $_ := set $md "namespace" $root.Release.Namespace -}}{{- end -}}
{{- $labels := default (dict) $md.labels -}}
{{- if $fromBase -}}{{- $_ := set $labels "app.kubernetes.io/part-of" "aigrid" -}}{{- end -}}
{{- $_ := set $labels "app.kubernetes.io/managed-by" "Helm" -}}
{{- $_ := set $labels "helm.sh/chart" (printf "%s-%s" $root.Chart.Name $root.Chart.Version) -}}
{{- $_ := set $md "labels" $labels -}}
{{- /* As Kustomize's namespace transformer: a binding's ServiceAccount subjects live in the namespace. */ -}}
{{- if has $o.kind (list "RoleBinding" "ClusterRoleBinding") -}}
{{- range $s := $o.subjects -}}
{{- if and (eq $s.kind "ServiceAccount") (not $s.namespace) -}}{{- $_ := set $s "namespace" $root.Release.Namespace -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $o.spec (kindIs "map" $o.spec) $o.spec.template -}}
{{- $pod := $o.spec.template.spec -}}
{{- range $c := concat (default (list) $pod.initContainers) $pod.containers -}}
{{- if eq $c.image "aigrid" -}}{{- $_ := set $c "image" (include "aigrid.image" $root) -}}{{- end -}}
{{- end -}}
{{- end }}
---
{{ toYaml $o }}
{{- end -}}
