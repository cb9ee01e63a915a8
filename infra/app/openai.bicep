// Azure OpenAI with keys disabled: the app and the deploying user call it with Microsoft Entra ID tokens
// (Cognitive Services OpenAI User), which needs the custom subdomain.
param name string
param location string
param tags object = {}

param deploymentName string
param modelName string
param modelVersion string

@description('Deployment type, e.g. GlobalStandard or Standard.')
param deploymentSku string

@description('Thousands of tokens per minute.')
param capacity int

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  properties: {
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource deployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: deploymentSku
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
    // Keeps the pinned version until it retires, then moves to the default rather than failing.
    versionUpgradeOption: 'OnceCurrentVersionExpired'
  }
}

output name string = account.name
output endpoint string = account.properties.endpoint
output deploymentName string = deployment.name
