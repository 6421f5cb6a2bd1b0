#!/usr/bin/env python3
"""What the schema linters cannot see in docker/: whether the files agree with each other.

Run by scripts/check-deploy with the tools virtualenv's Python (for PyYAML):

  check-deploy-refs.py --k8s docker/k8s --compose-bin DOCKER_COMPOSE --compose docker/compose.yaml
                       [--kinema PATH/TO/kinema]

Kubernetes manifests: every Secret, ConfigMap (and key) and claim a pod uses is defined;
every volume mount names a volume; selectors of Deployments, Jobs, Services and
disruption budgets match pod labels; Service target ports and gRPC probe ports are
container ports; every $(VAR) in a container's args is in its environment; the
kustomization lists every manifest but those kept out on purpose.

With --kinema, every `kinema` command line in the compose file and the manifests is
checked against that binary: its subcommands exist and `--help` lists each flag used.

Prints one line per problem and exits 1 if there is any.
"""

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

# Manifests deliberately left out of kustomization.yaml, and why.
NOT_IN_KUSTOMIZATION = {
    "secrets.example.yaml": "placeholders: applying them would overwrite real Secrets",
    "migrate-job.yaml": "run on its own, before the control plane and on each upgrade",
}
KINEMA_IMAGES = ("kinema", "kinema-cuda")

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def load_manifests(k8s_dir):
    """(file name, document) for every Kubernetes object under k8s_dir."""
    objects = []
    for path in sorted(k8s_dir.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects.append((path.name, doc))
    return objects


def check_kustomization(k8s_dir):
    kustomization = yaml.safe_load((k8s_dir / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    for name in sorted(listed):
        if not (k8s_dir / name).is_file():
            problem("kustomization.yaml", f"lists {name}, which does not exist")
    for path in sorted(k8s_dir.glob("*.yaml")):
        name = path.name
        if name == "kustomization.yaml":
            continue
        if name in NOT_IN_KUSTOMIZATION and name in listed:
            problem("kustomization.yaml", f"lists {name} ({NOT_IN_KUSTOMIZATION[name]})")
        if name not in NOT_IN_KUSTOMIZATION and name not in listed:
            problem("kustomization.yaml", f"does not list {name}")


def image_name(image):
    """The repository name of an image reference, without registry and tag."""
    return image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]


def pod_specs(objects):
    """(where, pod labels, pod spec) for every workload."""
    for file, obj in objects:
        kind = obj.get("kind")
        if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            where = f"{file} {kind}/{obj['metadata']['name']}"
            template = obj["spec"]["template"]
            labels = template.get("metadata", {}).get("labels", {})
            selector = obj["spec"].get("selector", {}).get("matchLabels")
            if selector is not None and not selector.items() <= labels.items():
                problem(where, f"selector {selector} does not match its pod labels {labels}")
            yield where, labels, template["spec"]


def check_references(objects):
    data_keys = {}  # (kind, name) -> set of keys
    for _, obj in objects:
        kind, name = obj.get("kind"), obj["metadata"]["name"]
        if kind in ("Secret", "ConfigMap"):
            keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
            data_keys[(kind, name)] = keys
        elif kind == "PersistentVolumeClaim":
            data_keys[(kind, name)] = set()

    def need(where, kind, name, key=None):
        if (kind, name) not in data_keys:
            problem(where, f"uses {kind} {name}, which no manifest defines")
        elif key is not None and key not in data_keys[(kind, name)]:
            problem(where, f"uses key {key!r} of {kind} {name}, which it does not have")

    pods = list(pod_specs(objects))
    for where, _, spec in pods:
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            if "secret" in v:
                name = v["secret"]["secretName"]
                need(where, "Secret", name)
                for item in v["secret"].get("items", []):
                    need(where, "Secret", name, item["key"])
            if "configMap" in v:
                name = v["configMap"]["name"]
                need(where, "ConfigMap", name)
                for item in v["configMap"].get("items", []):
                    need(where, "ConfigMap", name, item["key"])
            if "persistentVolumeClaim" in v:
                need(where, "PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"])
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            cwhere = f"{where} container {c['name']}"
            env_names = set()
            for e in c.get("env", []):
                env_names.add(e["name"])
                ref = e.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    need(cwhere, "Secret", ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
                if "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    need(cwhere, "ConfigMap", r["name"], r["key"])
            for source in c.get("envFrom", []):
                for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                    if field in source:
                        name = source[field]["name"]
                        need(cwhere, kind, name)
                        env_names |= data_keys.get((kind, name), set())
            for arg in c.get("command", []) + c.get("args", []):
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                    if var not in env_names:
                        problem(cwhere, f"uses $({var}), which is not in its environment")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    problem(cwhere, f"mounts volume {m['name']}, which the pod does not define")
            ports = {p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                grpc = c.get(probe, {}).get("grpc")
                if grpc and grpc["port"] not in ports:
                    problem(cwhere, f"{probe} checks port {grpc['port']}, not a container port")
    return pods


def check_selectors(objects, pods):
    for file, obj in objects:
        kind = obj.get("kind")
        if kind == "Service":
            selector = obj["spec"].get("selector", {})
        elif kind == "PodDisruptionBudget":
            selector = obj["spec"].get("selector", {}).get("matchLabels", {})
        else:
            continue
        where = f"{file} {kind}/{obj['metadata']['name']}"
        chosen = [(w, s) for w, labels, s in pods if selector.items() <= labels.items()]
        if not chosen:
            problem(where, f"selector {selector} matches no pod template")
            continue
        if kind == "Service":
            names = {
                p["name"] for _, s in chosen for c in s["containers"] for p in c.get("ports", [])
                if "name" in p
            }
            for port in obj["spec"]["ports"]:
                target = port.get("targetPort")
                if isinstance(target, str) and target not in names:
                    problem(where, f"targets port {target!r}, which its pods do not name")


def kinema_command_lines(objects, compose):
    """(where, argv after `kinema`) for every kinema command line in the files."""
    for where, _, spec in pod_specs(objects):
        for c in spec.get("containers", []):
            if image_name(c["image"]) in KINEMA_IMAGES and not c.get("command"):
                yield f"{where} container {c['name']}", list(c.get("args", []))
    for name, service in compose["services"].items():
        if image_name(service.get("image", "")) not in KINEMA_IMAGES:
            continue
        where = f"compose.yaml service {name}"
        entrypoint = service.get("entrypoint")
        if not entrypoint:
            yield where, list(service.get("command") or [])
        else:
            # A shell script: each `kinema …` up to the end of its command.
            script = " ".join(service.get("command") or []).replace("\\\n", " ")
            for line in re.split(r"[\n;|&]+", script):
                try:
                    words = shlex.split(line, comments=True)
                except ValueError:  # a quote split by the cut above: not a kinema line
                    continue
                if words and words[0] == "kinema":
                    yield where, words[1:]


def subcommands(help_text):
    """The subcommand names a clap `--help` lists under "Commands:"."""
    names, inside = set(), False
    for line in help_text.splitlines():
        if line.startswith("Commands:"):
            inside = True
        elif inside and line and not line.startswith(" "):
            inside = False
        elif inside and line.strip():
            names.add(line.split()[0])
    return names


def check_kinema_flags(kinema, command_lines):
    helps = {}

    def help_of(path):
        if path not in helps:
            run = subprocess.run([kinema, *path, "--help"], capture_output=True, text=True)
            helps[path] = run.stdout if run.returncode == 0 else None
        return helps[path]

    for where, argv in command_lines:
        path, flags = (), []
        for word in argv:
            if word.startswith("--"):
                flags.append(word[2:].split("=", 1)[0])
            elif not word.startswith("-") and word in subcommands(help_of(path) or ""):
                path += (word,)
        # The first plain word after the path, if any, should have been a subcommand.
        plain = [w for w in argv if not w.startswith("-")]
        if not path and plain:
            problem(where, f"`kinema {plain[0]}`: no such subcommand")
            continue
        text = help_of(path)
        if text is None:
            problem(where, f"`kinema {' '.join(path)} --help` failed")
            continue
        for flag in flags:
            if not re.search(rf"(?<![\w-])--{re.escape(flag)}(?![\w-])", text):
                problem(where, f"`kinema {' '.join(path)}` has no --{flag}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s", type=Path, required=True)
    parser.add_argument("--compose", type=Path, required=True)
    parser.add_argument("--compose-bin", required=True)
    parser.add_argument("--kinema")
    args = parser.parse_args()

    objects = load_manifests(args.k8s)
    check_kustomization(args.k8s)
    pods = check_references(objects)
    check_selectors(objects, pods)
    if args.kinema:
        rendered = subprocess.run(
            [args.compose_bin, "-f", str(args.compose), "config", "--format", "json"],
            capture_output=True, text=True, check=True,
        )
        compose = json.loads(rendered.stdout)
        check_kinema_flags(args.kinema, kinema_command_lines(objects, compose))

    for line in dict.fromkeys(problems):  # once each, in order
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
