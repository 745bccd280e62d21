# PoseHub on AWS: a VPC, an EKS cluster with a node group per instance type of the profiles (scaled from zero by
# the cluster autoscaler), IAM roles for the autoscaler, the hub and the users' S3 credentials, and the lab's bucket.
# The chart values in deploy/rendered/ expect exactly these node labels and taints:
#   GPU nodes: label posehub.org/node-purpose=gpu, taint nvidia.com/gpu=present:NoSchedule.

data "aws_availability_zones" "available" {
  state = "available"
}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, 3)
}

module "vpc" {
  source  = "terraform-aws-modules/vpc/aws"
  version = "~> 5.16"

  name = var.cluster_name
  cidr = var.vpc_cidr
  azs  = local.azs

  private_subnets = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnets  = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 8, 48 + i)]

  enable_nat_gateway = true
  single_nat_gateway = true

  # where the load balancer of the hub's proxy-public service goes
  public_subnet_tags  = { "kubernetes.io/role/elb" = 1 }
  private_subnet_tags = { "kubernetes.io/role/internal-elb" = 1 }
}

module "eks" {
  source  = "terraform-aws-modules/eks/aws"
  version = "~> 20.31"

  cluster_name    = var.cluster_name
  cluster_version = var.kubernetes_version

  cluster_endpoint_public_access           = true
  enable_cluster_creator_admin_permissions = true

  vpc_id     = module.vpc.vpc_id
  subnet_ids = module.vpc.private_subnets

  cluster_addons = {
    coredns    = {}
    kube-proxy = {}
    vpc-cni    = {}
    # volumes of the hub database (sqlite-pvc) and of the users' homes
    aws-ebs-csi-driver = {
      service_account_role_arn = module.ebs_csi_irsa.iam_role_arn
    }
  }

  eks_managed_node_group_defaults = {
    block_device_mappings = {
      root = {
        device_name = "/dev/xvda"
        ebs = {
          volume_size           = var.node_disk_size
          volume_type           = "gp3"
          delete_on_termination = true
        }
      }
    }
  }

  # One node group per instance type a profile is priced at (profiles[].aws_instance_type): a server is
  # scheduled on exactly that type (node.kubernetes.io/instance-type), so what it costs is what it ran on.
  # All but the system group start at 0 nodes and are scaled by the cluster autoscaler (cluster_autoscaler_irsa):
  # EKS tags each managed group's Auto Scaling group for its autodiscovery, and the autoscaler reads a group's
  # labels and taints from EKS (eks:DescribeNodegroup) to scale it up from zero.
  eks_managed_node_groups = merge(
    {
      # the hub, the proxy, Dask Gateway, Dask schedulers, the cluster autoscaler
      system = {
        ami_type       = "AL2023_x86_64_STANDARD"
        instance_types = [var.system_instance_type]
        min_size       = 1
        max_size       = 2
        desired_size   = 1

        labels = {
          "posehub.org/node-purpose"     = "system"
          "hub.jupyter.org/node-purpose" = "core"
        }
      }
    },
    {
      for t in var.cpu_instance_types : "cpu-${replace(t, ".", "-")}" => {
        ami_type       = "AL2023_x86_64_STANDARD"
        instance_types = [t]
        min_size       = 0
        max_size       = var.cpu_max_size
        desired_size   = 0

        labels = {
          "posehub.org/node-purpose"     = "cpu"
          "hub.jupyter.org/node-purpose" = "user"
        }
      }
    },
    {
      for t in var.gpu_instance_types : "gpu-${replace(t, ".", "-")}" => {
        ami_type       = "AL2023_x86_64_NVIDIA"
        instance_types = [t]
        min_size       = 0
        max_size       = var.gpu_max_size
        desired_size   = 0

        labels = {
          "posehub.org/node-purpose"     = "gpu"
          "hub.jupyter.org/node-purpose" = "user"
        }

        taints = {
          gpu = {
            key    = "nvidia.com/gpu"
            value  = "present"
            effect = "NO_SCHEDULE"
          }
        }
      }
    },
  )
}

# The cluster autoscaler (installed with its chart, deploy/README.md) adds nodes when a server or Dask
# worker is pending, and removes idle ones.
module "cluster_autoscaler_irsa" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.48"

  role_name_prefix                 = "${var.cluster_name}-cluster-autoscaler-"
  attach_cluster_autoscaler_policy = true
  cluster_autoscaler_cluster_names = [module.eks.cluster_name]

  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["kube-system:cluster-autoscaler"]
    }
  }
}

# The hub's own role (its pod's service account): it lists the home prefixes to bill storage, and assumes
# the users' role for each server with a session policy narrowed to that user's prefixes and buckets.
module "hub_irsa" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.48"

  role_name_prefix = "${var.cluster_name}-hub-"
  role_policy_arns = { hub = aws_iam_policy.hub.arn }

  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["${var.namespace}:hub"]
    }
  }
}

resource "aws_iam_policy" "hub" {
  name_prefix = "${var.cluster_name}-hub-"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = ["sts:AssumeRole", "sts:TagSession"], Resource = aws_iam_role.users.arn },
      { Effect = "Allow", Action = ["s3:ListBucket", "s3:GetBucketLocation"], Resource = aws_s3_bucket.data.arn },
    ]
  })
}

# What users' credentials may ever do (buckets.sts.role_arn): the data bucket, read and write. Each server's
# credentials are this role narrowed by a session policy to the user's own prefix and their groups' buckets.
resource "aws_iam_role" "users" {
  name_prefix = "${var.cluster_name}-users-"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { AWS = module.hub_irsa.iam_role_arn }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
    }]
  })
}

resource "aws_iam_role_policy" "users" {
  name = "data-bucket"
  role = aws_iam_role.users.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = ["s3:ListBucket", "s3:GetBucketLocation"], Resource = aws_s3_bucket.data.arn },
      {
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
        Resource = "${aws_s3_bucket.data.arn}/*"
      },
    ]
  })
}

module "ebs_csi_irsa" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.48"

  role_name_prefix      = "${var.cluster_name}-ebs-csi-"
  attach_ebs_csi_policy = true

  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["kube-system:ebs-csi-controller-sa"]
    }
  }
}

# The lab's data: versioned, encrypted, never public.
resource "aws_s3_bucket" "data" {
  bucket = var.data_bucket_name
}

resource "aws_s3_bucket_versioning" "data" {
  bucket = aws_s3_bucket.data.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket = aws_s3_bucket.data.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# The cost ledger (costs.db_url): PostgreSQL, which the hub pod (cost service, budget checks) and the Dask
# gateway (worker meter) both write. Private subnets, reachable from the cluster's nodes only; the master
# password is kept in AWS Secrets Manager (terraform output ledger_password_secret_arn).
resource "aws_db_subnet_group" "ledger" {
  name_prefix = "${var.cluster_name}-ledger-"
  subnet_ids  = module.vpc.private_subnets
}

resource "aws_security_group" "ledger" {
  name_prefix = "${var.cluster_name}-ledger-"
  vpc_id      = module.vpc.vpc_id

  ingress {
    description     = "PostgreSQL from the cluster's nodes"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [module.eks.node_security_group_id]
  }
}

resource "aws_db_instance" "ledger" {
  identifier_prefix           = "${var.cluster_name}-ledger-"
  engine                      = "postgres"
  engine_version              = "16"
  instance_class              = var.ledger_instance_class
  allocated_storage           = 20
  storage_type                = "gp3"
  storage_encrypted           = true
  db_name                     = "posehub"
  username                    = "posehub"
  manage_master_user_password = true
  db_subnet_group_name        = aws_db_subnet_group.ledger.name
  vpc_security_group_ids      = [aws_security_group.ledger.id]
  backup_retention_period     = 7
  skip_final_snapshot         = false
  final_snapshot_identifier   = "${var.cluster_name}-ledger-final"
}
