// One resource group with everything the chat backend needs, reachable only with Microsoft Entra ID:
// no storage keys, no OpenAI keys, no Application Insights instrumentation key ingestion.
// `azd up` fills the parameters from infra/main.parameters.json and the azd environment.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds the unique names of every resource.')
param environmentName string

@minLength(1)
@description('Region for every resource (the region must offer the Flex Consumption plan).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the deploying user or service principal: gets the same data roles as the app, to run it locally with `az login`. Empty skips those grants.')
param principalId string = ''

@description('Type of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

// Callers
@description('How the app identifies callers: jwt (the app validates bearer tokens itself), easyauth (App Service Authentication in front of the app) or none (refused by the app on Azure unless AUTH_ALLOW_NONE is set by hand).')
@allowed([
  'jwt'
  'easyauth'
  'none'
])
param authMode string = 'jwt'

@description('AUTH_MODE=jwt: expected `iss`. Empty means the deploying tenant\'s Microsoft Entra ID v2.0 issuer.')
param authIssuer string = ''

@description('AUTH_MODE=jwt: expected `aud`, for Entra ID v2.0 tokens the API app registration\'s client id. Empty leaves the app refusing to start until it is set.')
param authAudience string = ''

@description('AUTH_MODE=jwt: JWKS URL. Empty means the deploying tenant\'s Microsoft Entra ID v2.0 keys.')
param authJwksUrl string = ''

@secure()
@description('Standard Webhooks secret(s) for /api/webhooks/messages (whsec_..., space-separated for rotation). Empty leaves the route off.')
param webhookSecret string = ''

@secure()
@description('Secret of the GitHub webhook for /api/webhooks/github. Empty leaves the route off.')
param githubWebhookSecret string = ''

@description('AUTH_MODE=easyauth: client id of the Microsoft Entra app registration that callers get tokens for.')
param easyAuthClientId string = ''

@description('AUTH_MODE=easyauth: tenant of that app registration. Empty means the deploying tenant.')
param easyAuthTenantId string = ''

@description('AUTH_MODE=easyauth: paths served without a token (the app checks webhook signatures itself).')
param easyAuthExcludedPaths array = [
  '/api/health'
  '/api/webhooks/messages'
  '/api/webhooks/github'
]

// Browsers
@description('Origins allowed to call the API from a browser (the platform answers CORS, as Host.CORS does locally), e.g. https://chat.example.com. Empty: none.')
param corsAllowedOrigins array = []

@description('Send Access-Control-Allow-Credentials (cookies, EasyAuth sessions) to those origins; never with "*".')
param corsSupportCredentials bool = false

// Model
@description('Chat model to deploy; also picks the tokenizer and the context window in the app.')
param openAiModelName string = 'gpt-4o-mini'

@description('Version of that model.')
param openAiModelVersion string = '2024-07-18'

@description('Deployment name, sent by the app as `model`.')
param openAiDeploymentName string = 'chat'

@description('Deployment type: GlobalStandard (pay per token, routed worldwide), Standard (in-region), DataZoneStandard...')
param openAiDeploymentSku string = 'GlobalStandard'

@minValue(1)
@description('Capacity in thousands of tokens per minute.')
param openAiCapacity int = 30

@description('Region of the Azure OpenAI account when the model is not offered in `location`. Empty means `location`.')
param openAiLocation string = ''

// Storage and scale
@maxLength(31)
@description('Prefix of the table names (letters and digits, starting with a letter), to share one account between environments.')
param tablesPrefix string = ''

@description('Tables created up front (the app also creates missing tables); TABLES_PREFIX is prepended.')
param tableNames array = [
  'conversations'
  'limits'
]

@minValue(1)
@maxValue(1000)
@description('Most instances the Flex Consumption plan scales out to: a ceiling on spend under load.')
param maximumInstanceCount int = 100

@allowed([
  512
  2048
  4096
])
@description('Memory of each instance, in MB.')
param instanceMemoryMB int = 2048

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var loginEndpoint = environment().authentication.loginEndpoint
var entraIssuer = '${loginEndpoint}${tenant().tenantId}/v2.0'
var entraJwksUrl = '${loginEndpoint}${tenant().tenantId}/discovery/v2.0/keys'
var effectiveAuthIssuer = empty(authIssuer) ? entraIssuer : authIssuer
var effectiveAuthJwksUrl = empty(authJwksUrl) ? entraJwksUrl : authJwksUrl

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-api-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    tableNames: [for tableName in tableNames: '${tablesPrefix}${tableName}']
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module openAi 'app/openai.bicep' = {
  name: 'openai'
  scope: rg
  params: {
    name: 'oai-${resourceToken}'
    location: empty(openAiLocation) ? location : openAiLocation
    tags: tags
    deploymentName: openAiDeploymentName
    modelName: openAiModelName
    modelVersion: openAiModelVersion
    deploymentSku: openAiDeploymentSku
    capacity: openAiCapacity
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    openAiEndpoint: openAi.outputs.endpoint
    openAiDeploymentName: openAi.outputs.deploymentName
    openAiModelName: openAiModelName
    tablesPrefix: tablesPrefix
    authMode: authMode
    authIssuer: effectiveAuthIssuer
    authAudience: authAudience
    authJwksUrl: effectiveAuthJwksUrl
    easyAuthClientId: easyAuthClientId
    easyAuthTenantId: empty(easyAuthTenantId) ? tenant().tenantId : easyAuthTenantId
    easyAuthExcludedPaths: easyAuthExcludedPaths
    webhookSecret: webhookSecret
    githubWebhookSecret: githubWebhookSecret
    corsAllowedOrigins: corsAllowedOrigins
    corsSupportCredentials: corsSupportCredentials
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    openAiAccountName: openAi.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

// azd stores every output in the environment; infra/hooks/postprovision writes the app's settings among
// them into local.settings.json (see infra/hooks/local-settings-outputs.json).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output TABLES_ENDPOINT string = storage.outputs.tableEndpoint
output TABLES_PREFIX string = tablesPrefix
output AZURE_OPENAI_ENDPOINT string = openAi.outputs.endpoint
output AZURE_OPENAI_DEPLOYMENT string = openAi.outputs.deploymentName
output AZURE_OPENAI_MODEL string = openAiModelName
output AUTH_MODE string = authMode
output AUTH_ISSUER string = authMode == 'jwt' ? effectiveAuthIssuer : ''
output AUTH_AUDIENCE string = authMode == 'jwt' ? authAudience : ''
output AUTH_JWKS_URL string = authMode == 'jwt' ? effectiveAuthJwksUrl : ''
output AZURE_IDENTITY_CLIENT_ID string = identity.outputs.clientId
