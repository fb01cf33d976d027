"""Template format, version 1: the shape and types only (cross-field checks live in validate.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_IMAGE = "Debian:debian-12:12-gen2:latest"
# Azure's HPC image: Mellanox OFED (InfiniBand), UCX, HPC-X (virtual-machines/configure)
HPC_IMAGE = "microsoft-dsvm:ubuntu-hpc:2204:latest"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Network(_Model):
    cidr: str = Field("198.18.0.0/24", description="IPv4 network of the cluster (host holds .1)")
    mtu: int = Field(65000, ge=1280, le=65535, description="MTU of the cluster network links")


class Head(_Model):
    size: str = Field("Standard_D4s_v5", description="Azure VM size of the head node")


class SharedFS(_Model):
    path: Literal["/shared"] = Field("/shared", description="mount point on every node")


class Blob(_Model):
    enabled: bool = Field(True, description="run a blob store (Azurite locally, a storage "
                          "account on Azure) for job inputs, outputs and executables")


class Storage(_Model):
    shared: SharedFS = Field(default_factory=SharedFS)
    blob: Blob = Field(default_factory=Blob)


class NodeSet(_Model):
    name: str = Field(description="node set name; also its Slurm partition and node name prefix")
    size: str = Field(description="Azure VM size, e.g. Standard_D4s_v5 or Standard_HB120rs_v3")
    min: int = Field(0, ge=0, description="nodes that always exist (Slurm static nodes)")
    max: int = Field(1, ge=1, description="largest number of nodes")
    rdma: bool = Field(False, description="RDMA (InfiniBand) capable node set for MPI")
    partition: str | None = Field(
        None, description="Slurm partition (default: the node set's name); node sets that "
        "share a partition back each other up when one cannot grow")
    idle_timeout: int = Field(300, ge=5, le=86400,
                              description="seconds a dynamic node may stay idle before removal")
    resume_timeout: int | None = Field(
        None, ge=10, le=7200, description="seconds a new node may take to join Slurm "
        "(default: 120 locally; 1800 on Azure, where a VM boots and installs for minutes)")


class LoginSet(_Model):
    name: str = Field("login", description="login node set name; its nodes are NAME-1 ...")
    size: str = Field("Standard_D4s_v5", description="Azure VM size of each login node")
    count: int = Field(1, ge=1, le=8, description="login nodes (always there; users log in "
                       "with `cloudhpc shell` and submit from them)")
    public_ip: bool = Field(True, description="Azure: a public IP for each login node (SSH "
                            "from azure.ssh_cidrs only)")


class LocalProvider(_Model):
    cpu_cap: int = Field(
        16, ge=1, le=256,
        description="most CPUs a local node declares to Slurm; a 120-vCPU size is emulated "
        "with this many job slots so it still runs on a small machine",
    )
    memory_cap_gib: int = Field(
        16, ge=1, le=4096,
        description="most memory a local node declares to Slurm (GiB); like cpu_cap, a big "
        "size is emulated with this much so that its jobs still fit a small machine",
    )
    capacity: dict[str, int] = Field(
        default_factory=dict,
        description="node set -> most nodes the local provider will create (emulates a cloud "
        "quota or capacity shortage)")


class Azure(_Model):
    region: str | None = Field(None, description="Azure region, e.g. eastus (required to "
                               "deploy or export to Azure)")
    admin_user: str = Field("hpcadmin", description="Linux admin user of every VM")
    image: str = Field(DEFAULT_IMAGE,
                       description="the marketplace image PUBLISHER:OFFER:SKU:VERSION that "
                       "cloudhpc's node image is built on (`cloudhpc image export`); VMs boot "
                       "the built node image, named by the deployment's imageId parameter. "
                       f"Default: {DEFAULT_IMAGE}, or Azure's HPC image {HPC_IMAGE} (the "
                       "InfiniBand stack, UCX) when a node set has rdma: true — one image for "
                       "every VM, so every node runs the same Slurm")
    head_public_ip: bool = Field(True, description="give the head node a public IP address")
    nat_gateway: bool = Field(False, description="give the cluster's subnets a NAT gateway: "
                              "outbound internet for every VM (not needed to boot: the node "
                              "image has everything; scale-set VMs have no outbound access "
                              "without one)")
    rdma_cidr: str | None = Field(None, description="the subnet of RDMA node sets' scale-set "
                                  "instances, whose addresses Azure gives (default: the block "
                                  "of network.cidr's size right after it)")
    ssh_cidrs: list[str] = Field(default_factory=list,
                                 description="CIDRs allowed to reach the head's SSH port")
    api_cidrs: list[str] = Field(default_factory=list,
                                 description="CIDRs allowed to reach the head's API port")
    package: str | None = Field(None, description="ignored: VMs boot cloudhpc's node image, "
                                "which carries cloudhpc (kept so that templates and stored "
                                "clusters of earlier versions still load)")
    subscription: str | None = Field(None, description="subscription id to deploy to "
                                     "(default: $AZURE_SUBSCRIPTION_ID)")
    resource_group: str | None = Field(None, description="resource group to deploy to "
                                       "(default: cloudhpc-NAME, created and removed by "
                                       "cloudhpc)")


class Api(_Model):
    https: bool = Field(True, description="serve the head's REST API over HTTPS with a "
                        "certificate made for the cluster at `up` (false: plain HTTP, local "
                        "clusters only)")


class Database(_Model):
    host: str | None = Field(
        None, description="an external MySQL-compatible server for Slurm's accounting, by "
        "host name (on Azure: an Azure Database for MySQL flexible server, "
        "NAME.mysql.database.azure.com); none: MariaDB on the head node")
    port: int = Field(3306, ge=1, le=65535, description="the external server's port")
    user: str = Field("slurm", description="the database user slurmdbd connects as")
    name: str = Field("slurm_acct_db", pattern=r"^[A-Za-z0-9_]{1,64}$",
                      description="the database slurmdbd keeps its tables in")
    password_file: str | None = Field(
        None, description="on the head node, a root-only file holding the external server's "
        "password (with MariaDB on the head, cloudhpc generates one)")


class Accounting(_Model):
    enabled: bool = Field(True, description="Slurm accounting: slurmdbd and a database "
                          "(sacct, sstat, sreport, sshare, fair share, `cloudhpc report`)")
    keep: bool = Field(False, description="keep a local cluster's accounting data when it is "
                       "taken down; the next cluster of the same name continues it")
    accounts: dict[str, list[str]] = Field(
        default_factory=dict, description="Slurm accounts and their users; a user in none "
        "gets an account of their own name")
    database: Database = Field(default_factory=Database)


class Template(_Model):
    version: Literal[1] = Field(description="template format version")
    name: str = Field(description="cluster name: lowercase letters, digits, '-'; <= 20 chars")
    provider: Literal["local", "azure"] = "local"
    network: Network = Field(default_factory=Network)
    head: Head = Field(default_factory=Head)
    storage: Storage = Field(default_factory=Storage)
    compute: list[NodeSet] = Field(min_length=1, description="compute node sets")
    login: list[LoginSet] = Field(default_factory=list, description="login node sets: "
                                  "where users get a shell and submit (default: the head)")
    api: Api = Field(default_factory=Api)
    accounting: Accounting = Field(default_factory=Accounting)
    local: LocalProvider = Field(default_factory=LocalProvider)
    azure: Azure = Field(default_factory=Azure)

    @model_validator(mode="after")
    def _hpc_image_for_rdma(self) -> Template:
        """RDMA node sets need the InfiniBand stack: Azure's HPC image is the base unless
        the template names one."""
        if any(ns.rdma for ns in self.compute) and "image" not in self.azure.model_fields_set:
            self.azure.image = HPC_IMAGE
            self.azure.model_fields_set.discard("image")
        return self
