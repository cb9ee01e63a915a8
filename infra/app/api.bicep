// The function app on the Flex Consumption plan: scales to zero, Node 22, deployed from a blob container
// it reads with its user-assigned identity. Every app setting the app reads on Azure is set here.
param name string
param planName string
param location string
param tags object = {}

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of that identity: AZURE_CLIENT_ID for the app, clientId for the host.')
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param applicationInsightsConnectionString string

param openAiEndpoint string
param openAiDeploymentName string
param openAiModelName string
param tablesPrefix string = ''

@allowed([
  'jwt'
  'easyauth'
  'none'
])
param authMode string
param authIssuer string = ''
param authAudience string = ''
param authJwksUrl string = ''
param easyAuthClientId string = ''
param easyAuthTenantId string = ''
param easyAuthExcludedPaths array = []

@secure()
param webhookSecret string = ''
@secure()
param githubWebhookSecret string = ''

@description('Origins allowed by the platform CORS (siteConfig.cors); empty: none.')
param corsAllowedOrigins array = []
param corsSupportCredentials bool = false

param maximumInstanceCount int = 100
param instanceMemoryMB int = 2048

var storageSuffix = environment().suffixes.storage
var blobEndpoint = 'https://${storageAccountName}.blob.${storageSuffix}'
var queueEndpoint = 'https://${storageAccountName}.queue.${storageSuffix}'
var tableEndpoint = 'https://${storageAccountName}.table.${storageSuffix}'

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true // Linux
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd finds the app to deploy `api` to by this tag.
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      // The platform answers preflights and adds Access-Control-Allow-Origin before the app runs, like Host.CORS
      // under func start and the local host.
      cors: {
        allowedOrigins: corsAllowedOrigins
        supportCredentials: corsSupportCredentials
      }
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}/${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'node'
        version: '22'
      }
    }
  }
}

// Publishing goes through Microsoft Entra ID (azd, Core Tools); no FTP or SCM user/password.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// The settings of src/config.ts. The JWT settings only in jwt mode, so easyauth cannot half-apply them.
var jwtSettings = authMode == 'jwt' ? {
  AUTH_ISSUER: authIssuer
  AUTH_AUDIENCE: authAudience
  AUTH_JWKS_URL: authJwksUrl
} : {}

// Webhook routes answer 404 until their secret is set; an empty secret is left out rather than set empty.
var webhookSettings = union(
  empty(webhookSecret) ? {} : { WEBHOOK_SECRET: webhookSecret },
  empty(githubWebhookSecret) ? {} : { GITHUB_WEBHOOK_SECRET: githubWebhookSecret }
)

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: union(
    {
      // Functions host storage over the identity (no connection string, no key).
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identityClientId
      AzureWebJobsStorage__blobServiceUri: blobEndpoint
      AzureWebJobsStorage__queueServiceUri: queueEndpoint
      AzureWebJobsStorage__tableServiceUri: tableEndpoint
      // Telemetry authenticated as the identity (Application Insights has local auth disabled).
      APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
      // The app
      AZURE_CLIENT_ID: identityClientId
      TABLES_ENDPOINT: tableEndpoint
      TABLES_PREFIX: tablesPrefix
      AZURE_OPENAI_ENDPOINT: openAiEndpoint
      AZURE_OPENAI_DEPLOYMENT: openAiDeploymentName
      AZURE_OPENAI_MODEL: openAiModelName
      AUTH_MODE: authMode
    },
    jwtSettings,
    webhookSettings
  )
}

// App Service Authentication: on exactly when AUTH_MODE=easyauth, because that mode trusts the
// x-ms-client-principal headers, which only the platform can make trustworthy. Deployed in every mode so
// that switching away from easyauth also turns it off.
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: authMode == 'easyauth'
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: easyAuthExcludedPaths
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        // Without a client id no provider is enabled, so every request gets 401: closed, not open.
        enabled: !empty(easyAuthClientId)
        registration: {
          clientId: easyAuthClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${easyAuthTenantId}/v2.0'
        }
        validation: {
          allowedAudiences: empty(easyAuthClientId) ? [] : [
            easyAuthClientId
            'api://${easyAuthClientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

output name string = functionApp.name
output uri string = 'https://${functionApp.properties.defaultHostName}'
