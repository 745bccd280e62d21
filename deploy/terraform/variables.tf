variable "region" {
  description = "AWS region of the cluster and the lab data bucket."
  type        = string
  default     = "us-east-1"
}

variable "cluster_name" {
  description = "Name of the EKS cluster (and prefix of its VPC and roles)."
  type        = string
  default     = "posehub"
}

variable "kubernetes_version" {
  description = "Kubernetes version of the EKS control plane and node groups."
  type        = string
  default     = "1.31"
}

variable "vpc_cidr" {
  description = "Address range of the cluster's VPC."
  type        = string
  default     = "10.42.0.0/16"
}

variable "system_instance_type" {
  description = "Instance type of the system node group (hub, proxy, Dask Gateway, Dask schedulers, the cluster autoscaler)."
  type        = string
  default     = "t3.large"
}

variable "cpu_instance_types" {
  description = "One node group each, from zero nodes: every aws_instance_type of the CPU profiles in posehub.yaml (checked by tests/test_deploy.py for the embedded config)."
  type        = list(string)
  default     = ["t3.medium", "m5.xlarge", "m5.2xlarge"]
}

variable "cpu_max_size" {
  description = "Most nodes of each CPU node group."
  type        = number
  default     = 4
}

variable "gpu_instance_types" {
  description = "One node group each, from zero nodes: every aws_instance_type of the GPU profiles in posehub.yaml."
  type        = list(string)
  default     = ["g5.2xlarge"]
}

variable "gpu_max_size" {
  description = "Most nodes of each GPU node group."
  type        = number
  default     = 2
}

variable "node_disk_size" {
  description = "Root volume of each node in GiB (the pose image with its CUDA wheels is large)."
  type        = number
  default     = 100
}

variable "data_bucket_name" {
  description = "Name of the S3 bucket for the lab's data (videos, labelled frames, models); globally unique."
  type        = string
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default     = { project = "posehub" }
}

variable "namespace" {
  description = "Kubernetes namespace of both releases (the hub's service account there gets the hub's IAM role)."
  type        = string
  default     = "posehub"
}

variable "ledger_instance_class" {
  description = "Instance class of the cost ledger's PostgreSQL (costs.db_url)."
  type        = string
  default     = "db.t4g.micro"
}
