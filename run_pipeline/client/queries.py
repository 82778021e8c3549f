"""GraphQL documents sent by the client, in the shapes of `shared/wandb-api.md` (section 3).

Documents only: no logic. Variables are named as the W&B SDK names them.
"""

RUN_FRAGMENT = """
fragment RunFragment on Run {
  id
  tags
  name
  displayName
  sweepName
  state
  config
  group
  jobType
  commit
  readOnly
  createdAt
  heartbeatAt
  updatedAt
  description
  notes
  systemMetrics
  summaryMetrics
  historyLineCount
  user { name username }
  historyKeys
}
"""

ARTIFACT_FRAGMENT = """
fragment ArtifactFragment on Artifact {
  __typename
  id
  versionIndex
  description
  metadata
  ttlDurationSeconds
  ttlIsInherited
  tags { id name }
  historyStep
  state
  size
  digest
  commitHash
  fileCount
  createdAt
  updatedAt
  artifactType { name }
  artifactSequence { __typename name project { id internalId name entity { name } } }
  aliases {
    id
    alias
    artifactCollection { __typename name project { id internalId name entity { name } } }
  }
}
"""

VIEWER = """
query Viewer {
  viewer { id entity username email flags teams { edges { node { name } } } }
}
"""

SERVER_FEATURES = """
query ServerFeaturesQuery {
  serverInfo { features { name isEnabled } }
}
"""

PROJECTS = """
query GetProjects($entity: String, $cursor: String, $perPage: Int = 50) {
  models(entityName: $entity, after: $cursor, first: $perPage) {
    pageInfo { endCursor hasNextPage }
    edges {
      node { id name entityName createdAt isBenchmark user { name username } }
      cursor
    }
  }
}
"""

PROJECT = """
query Project($project: String!, $entity: String!) {
  project(name: $project, entityName: $entity) {
    id internalId name entityName createdAt isBenchmark readOnly
    runCount
    user { name username }
  }
}
"""

RUNS = (
    """
query Runs($project: String!, $entity: String!, $cursor: String, $perPage: Int = 50,
           $order: String, $filters: JSONString) {
  project(name: $project, entityName: $entity) {
    internalId
    runCount(filters: $filters)
    readOnly
    runs(filters: $filters, after: $cursor, first: $perPage, order: $order) {
      edges { node { projectId ...RunFragment } cursor }
      pageInfo { endCursor hasNextPage }
    }
  }
}
"""
    + RUN_FRAGMENT
)

RUN = (
    """
query Run($project: String!, $entity: String!, $name: String!) {
  project(name: $project, entityName: $entity) {
    run(name: $name) { projectId ...RunFragment }
  }
}
"""
    + RUN_FRAGMENT
)

RUN_STATE = """
query RunState($project: String!, $entity: String!, $name: String!) {
  project(name: $project, entityName: $entity) { run(name: $name) { state } }
}
"""

RUN_HISTORY_KEYS = """
query RunHistoryKeys($project: String!, $entity: String!, $name: String!) {
  project(name: $project, entityName: $entity) { run(name: $name) { historyKeys } }
}
"""

RUN_FULL_HISTORY = """
query RunFullHistory($project: String!, $entity: String!, $name: String!, $samples: Int) {
  project(name: $project, entityName: $entity) { run(name: $name) { history(samples: $samples) } }
}
"""

RUN_FULL_EVENTS = """
query RunFullHistory($project: String!, $entity: String!, $name: String!, $samples: Int) {
  project(name: $project, entityName: $entity) { run(name: $name) { events(samples: $samples) } }
}
"""

RUN_SAMPLED_HISTORY = """
query RunSampledHistory($project: String!, $entity: String!, $name: String!,
                        $specs: [JSONString!]!) {
  project(name: $project, entityName: $entity) {
    run(name: $name) { sampledHistory(specs: $specs) }
  }
}
"""

HISTORY_PAGE = """
query HistoryPage($entity: String!, $project: String!, $run: String!, $minStep: Int64!,
                  $maxStep: Int64!, $pageSize: Int!) {
  project(name: $project, entityName: $entity) {
    run(name: $run) { history(minStep: $minStep, maxStep: $maxStep, samples: $pageSize) }
  }
}
"""

SAMPLED_HISTORY_PAGE = """
query SampledHistoryPage($entity: String!, $project: String!, $run: String!,
                         $spec: JSONString!) {
  project(name: $project, entityName: $entity) {
    run(name: $run) { sampledHistory(specs: [$spec]) }
  }
}
"""

RUN_PARQUET_HISTORY = """
query RunParquetHistory($entity: String!, $project: String!, $runName: String!,
                        $liveKeys: [String!]!) {
  project(name: $project, entityName: $entity) {
    run(name: $runName) { parquetHistory(liveKeys: $liveKeys) { parquetUrls } }
  }
}
"""

RUN_HISTORY_PLAN = """
query RunHistoryPlan($entity: String!, $project: String!, $name: String!, $parquet: Boolean!,
                     $events: Boolean = false, $samples: Int) {
  project(name: $project, entityName: $entity) {
    run(name: $name) {
      historyKeys
      eventsLineCount
      parquetHistory(liveKeys: ["_step"]) @include(if: $parquet) { parquetUrls }
      events(samples: $samples) @include(if: $events)
    }
  }
}
"""

RUN_COUNTED_EVENTS = """
query RunCountedEvents($project: String!, $entity: String!, $name: String!, $samples: Int) {
  project(name: $project, entityName: $entity) { run(name: $name) { eventsLineCount events(samples: $samples) } }
}
"""

RUN_EVENTS_LINE_COUNT = """
query RunEventsLineCount($project: String!, $entity: String!, $name: String!) {
  project(name: $project, entityName: $entity) { run(name: $name) { eventsLineCount } }
}
"""

RUN_FILES = """
query RunFiles($project: String!, $entity: String!, $name: String!, $fileCursor: String,
               $fileLimit: Int = 50, $fileNames: [String] = [], $upload: Boolean = false,
               $pattern: String) {
  project(name: $project, entityName: $entity) {
    internalId
    run(name: $name) {
      fileCount
      files(names: $fileNames, after: $fileCursor, first: $fileLimit, pattern: $pattern) {
        edges {
          node { id name url(upload: $upload) directUrl sizeBytes mimetype updatedAt md5 }
          cursor
        }
        pageInfo { endCursor hasNextPage }
      }
    }
  }
}
"""

UPSERT_RUN = (
    """
mutation UpsertBucket($id: String!, $description: String, $display_name: String,
                      $notes: String, $tags: [String!], $config: JSONString!,
                      $groupName: String, $jobType: String) {
  upsertBucket(input: {id: $id, description: $description, displayName: $display_name,
                       notes: $notes, tags: $tags, config: $config, groupName: $groupName,
                       jobType: $jobType}) {
    bucket { ...RunFragment }
  }
}
"""
    + RUN_FRAGMENT
)

UPSERT_SUMMARY = """
mutation UpsertBucket($id: String, $summaryMetrics: JSONString) {
  upsertBucket(input: {id: $id, summaryMetrics: $summaryMetrics}) { bucket { id } }
}
"""

CREATE_RUN = """
mutation UpsertBucket($project: String, $entity: String, $name: String!, $state: String) {
  upsertBucket(input: {modelName: $project, entityName: $entity, name: $name, state: $state}) {
    bucket { project { name entity { name } } id name }
    inserted
  }
}
"""

DELETE_RUN = """
mutation DeleteRun($id: ID!) {
  deleteRun(input: {id: $id}) { clientMutationId }
}
"""

DELETE_RUN_WITH_ARTIFACTS = """
mutation DeleteRun($id: ID!, $deleteArtifacts: Boolean) {
  deleteRun(input: {id: $id, deleteArtifacts: $deleteArtifacts}) { clientMutationId }
}
"""

UPDATE_RUN_STATE = """
mutation UpdateRunState($id: ID!, $state: String!) {
  updateRunState(input: {id: $id, state: $state}) { success }
}
"""

CREATE_RUN_FILES = """
mutation CreateRunFiles($entity: String!, $project: String!, $run: String!,
                        $files: [String!]!) {
  createRunFiles(input: {entityName: $entity, projectName: $project, runName: $run,
                         files: $files}) {
    runID
    uploadHeaders
    files { name uploadUrl }
  }
}
"""

MARK_RUN_FILES_UPLOADED = """
mutation MarkRunFilesUploaded($entity: String!, $project: String!, $run: String!,
                              $files: [String!]!) {
  markRunFilesUploaded(input: {entityName: $entity, projectName: $project, runName: $run,
                               files: $files}) { success }
}
"""

DELETE_FILES = """
mutation deleteFiles($files: [ID!]!, $projectId: Int) {
  deleteFiles(input: {files: $files, projectId: $projectId}) { success }
}
"""

RUN_OUTPUT_ARTIFACTS = (
    """
query RunOutputArtifacts($entity: String!, $project: String!, $run: String!,
                         $cursor: String, $perPage: Int) {
  project(entityName: $entity, name: $project) {
    run(name: $run) {
      artifacts: outputArtifacts(after: $cursor, first: $perPage) {
        totalCount
        pageInfo { endCursor hasNextPage }
        edges { node { ...ArtifactFragment } cursor }
      }
    }
  }
}
"""
    + ARTIFACT_FRAGMENT
)

RUN_INPUT_ARTIFACTS = (
    """
query RunInputArtifacts($entity: String!, $project: String!, $run: String!,
                        $cursor: String, $perPage: Int) {
  project(entityName: $entity, name: $project) {
    run(name: $run) {
      artifacts: inputArtifacts(after: $cursor, first: $perPage) {
        totalCount
        pageInfo { endCursor hasNextPage }
        edges { node { ...ArtifactFragment } cursor }
      }
    }
  }
}
"""
    + ARTIFACT_FRAGMENT
)

ARTIFACT_MEMBERSHIP_BY_NAME = (
    """
query ArtifactMembershipByName($entity: String!, $project: String!, $name: String!) {
  project(entityName: $entity, name: $project) {
    artifactCollectionMembership(name: $name) {
      id
      versionIndex
      createdAt
      aliases { id alias artifactCollection { __typename name } }
      artifactCollection { __typename name project { id name entity { name } } }
      artifact { ...ArtifactFragment }
    }
  }
}
"""
    + ARTIFACT_FRAGMENT
)

USE_ARTIFACT = """
mutation UseArtifact($entityName: String!, $projectName: String!, $runName: String!,
                     $artifactID: ID!, $usedAs: String) {
  useArtifact(input: {entityName: $entityName, projectName: $projectName, runName: $runName,
                      artifactID: $artifactID, usedAs: $usedAs}) {
    artifact { id digest description state createdAt metadata }
  }
}
"""

CREATE_ARTIFACT = """
mutation CreateArtifact($artifactTypeName: String!, $artifactCollectionNames: [String!],
                        $entityName: String!, $projectName: String!, $runName: String,
                        $description: String, $digest: String!,
                        $digestAlgorithm: ArtifactDigestAlgorithm!,
                        $aliases: [ArtifactAliasInput!], $metadata: JSONString,
                        $clientID: ID, $sequenceClientID: ID, $tags: [TagInput!]) {
  createArtifact(input: {artifactTypeName: $artifactTypeName,
                         artifactCollectionNames: $artifactCollectionNames,
                         entityName: $entityName, projectName: $projectName, runName: $runName,
                         description: $description, digest: $digest,
                         digestAlgorithm: $digestAlgorithm, aliases: $aliases,
                         metadata: $metadata, clientID: $clientID,
                         sequenceClientID: $sequenceClientID, enableDigestDeduplication: true,
                         tags: $tags}) {
    artifact {
      id
      state
      versionIndex
      artifactSequence { id name latestArtifact { id versionIndex } }
    }
  }
}
"""
