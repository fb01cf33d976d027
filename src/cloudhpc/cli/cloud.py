"""Cloud commands: export an ARM template, price a template."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from cloudhpc import cost as costs
from cloudhpc.azure.arm import export as arm_export
from cloudhpc.azure.lint import lint
from cloudhpc.cli.output import emit_json, out, table
from cloudhpc.errors import CloudHPCError
from cloudhpc.template.loader import load

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def register(app: typer.Typer) -> None:
    @app.command()
    def export(template: Path,
               fmt: Annotated[str, typer.Option("--format", help="only 'arm' for now")] = "arm",
               output: Annotated[Path, typer.Option("-o", "--output",
                                                    help="directory to write to")] = Path("."),
               as_json: JsonOpt = False) -> None:
        """Write azuredeploy.json and azuredeploy.parameters.json for Azure's own tools."""
        if fmt != "arm":
            raise CloudHPCError(f"unknown export format {fmt!r}", hint="use --format arm")
        began = time.monotonic()
        model, _ = load(template, provider="azure")
        arm, params = arm_export(model)
        problems = lint(arm)
        if problems:  # a bug in the exporter, never the user's fault
            raise CloudHPCError(f"the exported template fails its own linter: {problems[0]}",
                                hint="please report this with the template")
        output.mkdir(parents=True, exist_ok=True)
        files = [output / "azuredeploy.json", output / "azuredeploy.parameters.json"]
        files[0].write_text(json.dumps(arm, indent=2) + "\n")
        files[1].write_text(json.dumps(params, indent=2) + "\n")
        result = {"files": [str(f) for f in files], "resources": len(arm["resources"]),
                  "seconds": round(time.monotonic() - began, 3)}
        if as_json:
            emit_json(result)
            return
        out.print(f"wrote {files[0]} ({len(arm['resources'])} resources) and {files[1]}")
        out.print("deploy with: az deployment group create -g RESOURCE_GROUP "
                  f"--template-file {files[0]} --parameters @{files[1]} "
                  "imageId=NODE_IMAGE_ID sshPublicKey=\"$(cat ~/.ssh/id_rsa.pub)\" "
                  "mungeKey=\"$(head -c 1024 /dev/urandom | base64 -w0)\" "
                  "clusterToken=\"$(openssl rand -hex 32)\"", highlight=False)

    image = typer.Typer(help="cloudhpc's node image: one recipe, built here (rehearsal) "
                        "or by Packer on Azure")
    app.add_typer(image, name="image")

    @image.command("build")
    def image_build(as_json: JsonOpt = False) -> None:
        """Build the node image here (mmdebstrap + the recipe; cached)."""
        from cloudhpc.cli.output import err
        from cloudhpc.image import build

        began = time.monotonic()
        built = build.build(lambda what: None if as_json else err.print(what))
        result = {"base": str(built.base), "layer": str(built.layer),
                  "wheel_sha256": built.sha256, "seconds": round(time.monotonic() - began, 1)}
        if as_json:
            emit_json(result)
        else:
            out.print(f"node image ready ({result['seconds']} s): cloudhpc wheel "
                      f"{built.sha256[:16]}, base {built.base}")

    @image.command("export")
    def image_export(template: Path,
                     output: Annotated[Path, typer.Option("-o", "--output",
                                                          help="directory to write to")
                                       ] = Path("image"),
                     as_json: JsonOpt = False) -> None:
        """Write the node image's Packer recipe for Azure (with the pinned wheels)."""
        from cloudhpc.image import packer

        model, _ = load(template, provider="azure")
        files, sha = packer.export(model, output)
        if as_json:
            emit_json({"files": [str(f) for f in files], "wheel_sha256": sha})
            return
        out.print(f"wrote {', '.join(str(f) for f in files)}; build with `packer init "
                  f"{output} && packer build -var subscription_id=... -var "
                  f"resource_group=... {output}`, then deploy with --image-id of "
                  f"cloudhpc-{sha[:16]}", highlight=False)

    @app.command()
    def cost(template: Path, as_json: JsonOpt = False) -> None:
        """Hourly cost at min and at max, and a monthly estimate (shipped price table)."""
        model, _ = load(template)
        est = costs.estimate(model)
        if as_json:
            emit_json(est)
            return
        cur = est["currency"]
        table(f"cost of {model.name} ({cur}, prices of {est['price_region']} "
              f"as of {est['prices_date']})",
              ["part", "size", "min", "max", f"{cur}/hour each"],
              [(r["part"], r["size"], r["min"], r["max"], f"{r['per_hour']:.4f}")
               for r in est["parts"]])
        out.print(f"hourly: {est['hourly_at_min']:.2f} at min, {est['hourly_at_max']:.2f} at "
                  f"max; monthly (730 h): {est['monthly_at_min']:.2f} at min, "
                  f"{est['monthly_at_max']:.2f} at max {cur}. {est['note']}.")
