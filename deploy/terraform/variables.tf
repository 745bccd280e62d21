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

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group (hub, proxy, Dask Gateway and CPU profiles). A node must fit the largest CPU profile's guaranteed cpu and memory plus the kubelet's reserve."
  type        = list(string)
  default     = ["m5.4xlarge"]
}

variable "cpu_min_size" {
  description = "Fewest CPU nodes."
  type        = number
  default     = 1
}

variable "cpu_max_size" {
  description = "Most CPU nodes."
  type        = number
  default     = 4
}

variable "cpu_desired_size" {
  description = "CPU nodes at creation (later changes come from the cluster autoscaler or the AWS console/CLI)."
  type        = number
  default     = 1
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group (GPU profiles and GPU Dask workers)."
  type        = list(string)
  default     = ["g5.4xlarge"]
}

variable "gpu_min_size" {
  description = "Fewest GPU nodes (0: none while no GPU server runs, with a cluster autoscaler)."
  type        = number
  default     = 0
}

variable "gpu_max_size" {
  description = "Most GPU nodes."
  type        = number
  default     = 2
}

variable "gpu_desired_size" {
  description = "GPU nodes at creation."
  type        = number
  default     = 0
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
