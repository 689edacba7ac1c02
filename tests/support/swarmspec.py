"""`docker service inspect` data built from a rendered stack file, for plan tests.

It follows what `docker stack deploy` makes of a compose service, as seen
with dockerd 20.10; the docker tests compare the plan against the real thing.
"""

import shlex

from authops.stackfile import unescape


def inspect_mount(volume: dict, document: dict, stack: str) -> dict:
    kind = volume.get("type", "volume")
    if kind == "tmpfs":
        return {
            "Type": "tmpfs",
            "Target": volume["target"],
            "TmpfsOptions": {"SizeBytes": volume["tmpfs"]["size"]},
        }
    if kind == "bind":
        return {"Type": "bind", "Source": volume["source"], "Target": volume["target"]}
    declared = document["volumes"][volume["source"]]
    return {
        "Type": "volume",
        "Source": f"{stack}_{volume['source']}",
        "Target": volume["target"],
        "VolumeOptions": {
            "Labels": {"com.docker.stack.namespace": stack},
            "DriverConfig": {
                "Name": declared.get("driver", "local"),
                "Options": {k: unescape(v) for k, v in declared["driver_opts"].items()},
            },
        },
    }


def inspect_service(document: dict, stack: str, name: str) -> dict:
    """Return the inspect data that a deploy of `document` gives service `name`."""
    service = document["services"][name]
    deploy = service["deploy"]
    container = {
        "Image": unescape(service["image"]),
        "Labels": {"com.docker.stack.namespace": stack},
        "Args": shlex.split(service["command"]),
        "Env": sorted(f"{k}={unescape(v)}" for k, v in service["environment"].items()),
        "Mounts": [inspect_mount(v, document, stack) for v in service["volumes"]],
        "Secrets": [
            {
                "File": {
                    "Name": s["target"],
                    "UID": "1000",
                    "GID": "1000",
                    "Mode": 256,
                },
                "SecretID": "x" * 25,
                "SecretName": s["source"],
            }
            for s in service["secrets"]
        ],
    }
    if "user" in service:
        container["User"] = service["user"]
    spec = {
        "Name": f"{stack}_{name}",
        "Labels": {"com.docker.stack.namespace": stack, **deploy["labels"]},
        "TaskTemplate": {
            "ContainerSpec": container,
            "Placement": {"Constraints": deploy["placement"]["constraints"]},
            "ForceUpdate": 0,
        },
        "Mode": {"Replicated": {"Replicas": deploy["replicas"]}},
        "EndpointSpec": {
            "Mode": "vip",
            "Ports": [
                {
                    "Protocol": port.get("protocol", "tcp"),
                    "TargetPort": port["target"],
                    "PublishedPort": port["published"],
                    "PublishMode": port.get("mode", "ingress"),
                }
                for port in service.get("ports", [])
            ],
        },
    }
    return {"ID": f"id-{name}", "Version": {"Index": 10}, "Spec": spec}
